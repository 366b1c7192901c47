package runtime

import (
	"errors"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/intelrdt"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Update changes a running container's resource limits: its cgroup
// settings and, with the schema options, its Intel RDT ones.
func (r *Runtime) Update(o UpdateOpts) error {
	c, err := r.load(o.ID)
	if err != nil {
		return err
	}
	res, err := o.resources()
	if err != nil {
		return err
	}
	config := c.Config()
	limits := config.Cgroups.Resources
	updateBlockIO(limits, res.BlockIO)
	updateCPU(limits, res.CPU)
	updateMemory(limits, res.Memory)
	limits.PidsLimit = res.Pids.Limit
	limits.Unified = res.Unified
	if err := o.updateIntelRdt(&config); err != nil {
		return err
	}
	// Device rules cannot be updated; leave the cgroup's as they are,
	// including rules others (such as GPU hooks) added.
	config.Cgroups.SkipDevices = true
	return c.Set(config)
}

// assign stores *v in *dst when v is set.
func assign[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func updateCPU(dst *cgroups.Resources, cpu *specs.LinuxCPU) {
	var period uint64
	var quota int64
	assign(&period, cpu.Period)
	assign(&quota, cpu.Quota)
	// Either may be given alone, keeping the other's current value; when
	// neither is, both are reset.
	if period != 0 || quota == 0 {
		dst.CpuPeriod = period
	}
	if quota != 0 || period == 0 {
		dst.CpuQuota = quota
	}
	if cpu.Shares != nil {
		dst.CpuShares = *cpu.Shares
		// cgroup v2 has a weight instead.
		dst.CpuWeight = cgroups.ConvertCPUSharesToCgroupV2Value(*cpu.Shares)
	}
	assign(&dst.CpuRtPeriod, cpu.RealtimePeriod)
	assign(&dst.CpuRtRuntime, cpu.RealtimeRuntime)
	dst.CpuBurst = cpu.Burst
	dst.CPUIdle = cpu.Idle
	dst.CpusetCpus, dst.CpusetMems = cpu.Cpus, cpu.Mems
}

func updateMemory(dst *cgroups.Resources, mem *specs.LinuxMemory) {
	assign(&dst.Memory, mem.Limit)
	assign(&dst.MemoryReservation, mem.Reservation)
	assign(&dst.MemorySwap, mem.Swap)
	assign(&dst.MemoryCheckBeforeUpdate, mem.CheckBeforeUpdate)
}

func updateBlockIO(dst *cgroups.Resources, bio *specs.LinuxBlockIO) {
	assign(&dst.BlkioWeight, bio.Weight)
	assign(&dst.BlkioLeafWeight, bio.LeafWeight)
	for _, wd := range bio.WeightDevice {
		dst.BlkioWeightDevice = setWeightDevice(dst.BlkioWeightDevice, wd)
	}
	for _, t := range []struct {
		list    *[]*cgroups.ThrottleDevice
		updates []specs.LinuxThrottleDevice
	}{
		{&dst.BlkioThrottleReadBpsDevice, bio.ThrottleReadBpsDevice},
		{&dst.BlkioThrottleWriteBpsDevice, bio.ThrottleWriteBpsDevice},
		{&dst.BlkioThrottleReadIOPSDevice, bio.ThrottleReadIOPSDevice},
		{&dst.BlkioThrottleWriteIOPSDevice, bio.ThrottleWriteIOPSDevice},
	} {
		for _, td := range t.updates {
			*t.list = setThrottleDevice(*t.list, td)
		}
	}
}

// setWeightDevice updates the entry for the device (the last one when
// there are several: it is the one that takes effect) or appends one.
func setWeightDevice(list []*cgroups.WeightDevice, wd specs.LinuxWeightDevice) []*cgroups.WeightDevice {
	for i := len(list) - 1; i >= 0; i-- {
		if d := list[i]; d.Major == wd.Major && d.Minor == wd.Minor {
			assign(&d.Weight, wd.Weight)
			assign(&d.LeafWeight, wd.LeafWeight)
			return list
		}
	}
	var weight, leaf uint16
	assign(&weight, wd.Weight)
	assign(&leaf, wd.LeafWeight)
	return append(list, cgroups.NewWeightDevice(wd.Major, wd.Minor, weight, leaf))
}

// setThrottleDevice is setWeightDevice for a throttle list.
func setThrottleDevice(list []*cgroups.ThrottleDevice, td specs.LinuxThrottleDevice) []*cgroups.ThrottleDevice {
	for i := len(list) - 1; i >= 0; i-- {
		if d := list[i]; d.Major == td.Major && d.Minor == td.Minor {
			d.Rate = td.Rate
			return list
		}
	}
	return append(list, cgroups.NewThrottleDevice(td.Major, td.Minor, td.Rate))
}

// updateIntelRdt applies the Intel RDT schema options, which need the
// feature on the host and in the container's configuration.
func (o *UpdateOpts) updateIntelRdt(config *configs.Config) error {
	if o.L3CacheSchema == "" && o.MemBwSchema == "" {
		return nil
	}
	if o.L3CacheSchema != "" && !intelrdt.IsCATEnabled() {
		return errors.New("Intel RDT/CAT: l3 cache schema is not enabled")
	}
	if o.MemBwSchema != "" && !intelrdt.IsMBAEnabled() {
		return errors.New("Intel RDT/MBA: memory bandwidth schema is not enabled")
	}
	if config.IntelRdt == nil {
		return errors.New("updating a non-existent Intel RDT configuration is not supported")
	}
	setIfGiven(&config.IntelRdt.L3CacheSchema, o.L3CacheSchema)
	setIfGiven(&config.IntelRdt.MemBwSchema, o.MemBwSchema)
	return nil
}
