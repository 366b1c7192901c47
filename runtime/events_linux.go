package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/intelrdt"
	"github.com/opencontainers/runc/types"
	"github.com/sirupsen/logrus"
)

// EventsOpts are the options of events.
type EventsOpts struct {
	ID string
	// Interval is the time between two stats events.
	Interval time.Duration
	// Stats prints one stats event and returns.
	Stats bool
}

// Events prints the container's events as JSON lines in runc's format
// (types.Event): its resource usage ("stats") every Interval, and each
// time the kernel's OOM killer acts in it ("oom"), until it stops.
func (r *Runtime) Events(o EventsOpts) error {
	c, err := r.load(o.ID)
	if err != nil {
		return err
	}
	if o.Interval <= 0 {
		return errors.New("duration interval must be greater than 0")
	}
	switch status, err := c.Status(); {
	case err != nil:
		return err
	case status == libcontainer.Stopped:
		return fmt.Errorf("container with id %s is not running", c.ID())
	}
	out := json.NewEncoder(r.stdout())
	emit := func(kind string, data any) {
		if err := out.Encode(types.Event{Type: kind, ID: c.ID(), Data: data}); err != nil {
			logrus.Errorf("write %s event: %v", kind, err)
		}
	}
	if o.Stats {
		stats, err := c.Stats()
		if err != nil {
			return err
		}
		emit("stats", eventStats(stats))
		return nil
	}
	oom, err := c.NotifyOOM()
	if err != nil {
		return err
	}
	ticker := time.NewTicker(o.Interval)
	defer ticker.Stop()
	for {
		select {
		case _, open := <-oom:
			if !open {
				// The container's cgroup is gone: it has stopped.
				return nil
			}
			emit("oom", nil)
		case <-ticker.C:
			stats, err := c.Stats()
			if err != nil {
				logrus.Errorf("container %s stats: %v", c.ID(), err)
				continue
			}
			emit("stats", eventStats(stats))
		}
	}
}

// eventStats converts libcontainer's statistics to the stats of a runc
// event, whose JSON form is what `runc events` users parse. It is nil when
// there are no cgroup statistics.
func eventStats(in *libcontainer.Stats) *types.Stats {
	cg := in.CgroupStats
	if cg == nil {
		return nil
	}
	cpu, mem, blkio := &cg.CpuStats, &cg.MemoryStats, &cg.BlkioStats
	return &types.Stats{
		CPU: types.Cpu{
			Usage: types.CpuUsage{
				Total:        cpu.CpuUsage.TotalUsage,
				Kernel:       cpu.CpuUsage.UsageInKernelmode,
				User:         cpu.CpuUsage.UsageInUsermode,
				Percpu:       cpu.CpuUsage.PercpuUsage,
				PercpuKernel: cpu.CpuUsage.PercpuUsageInKernelmode,
				PercpuUser:   cpu.CpuUsage.PercpuUsageInUsermode,
			},
			Throttling: types.Throttling(cpu.ThrottlingData),
			PSI:        cpu.PSI,
		},
		CPUSet: types.CPUSet(cg.CPUSetStats),
		Memory: types.Memory{
			Cache:     mem.Cache,
			Usage:     memoryEntry(mem.Usage),
			Swap:      memoryEntry(mem.SwapUsage),
			Kernel:    memoryEntry(mem.KernelUsage),
			KernelTCP: memoryEntry(mem.KernelTCPUsage),
			Raw:       mem.Stats,
			PSI:       mem.PSI,
		},
		Pids: types.Pids(cg.PidsStats),
		Blkio: types.Blkio{
			IoServiceBytesRecursive: blkioEntries(blkio.IoServiceBytesRecursive),
			IoServicedRecursive:     blkioEntries(blkio.IoServicedRecursive),
			IoQueuedRecursive:       blkioEntries(blkio.IoQueuedRecursive),
			IoServiceTimeRecursive:  blkioEntries(blkio.IoServiceTimeRecursive),
			IoWaitTimeRecursive:     blkioEntries(blkio.IoWaitTimeRecursive),
			IoMergedRecursive:       blkioEntries(blkio.IoMergedRecursive),
			IoTimeRecursive:         blkioEntries(blkio.IoTimeRecursive),
			SectorsRecursive:        blkioEntries(blkio.SectorsRecursive),
			PSI:                     blkio.PSI,
		},
		Hugetlb:           hugetlbUsage(cg.HugetlbStats),
		IntelRdt:          rdtStats(in.IntelRdtStats),
		NetworkInterfaces: in.Interfaces,
	}
}

func memoryEntry(d cgroups.MemoryData) types.MemoryEntry {
	return types.MemoryEntry{Usage: d.Usage, Max: d.MaxUsage, Limit: d.Limit, Failcnt: d.Failcnt}
}

// blkioEntries converts entries one by one; an empty list stays a
// non-nil empty one.
func blkioEntries(in []cgroups.BlkioStatEntry) []types.BlkioEntry {
	out := make([]types.BlkioEntry, len(in))
	for i, e := range in {
		out[i] = types.BlkioEntry(e)
	}
	return out
}

// hugetlbUsage converts usage by page size; the map is never nil.
func hugetlbUsage(in map[string]cgroups.HugetlbStats) map[string]types.Hugetlb {
	out := make(map[string]types.Hugetlb, len(in))
	for size, h := range in {
		out[size] = types.Hugetlb{Usage: h.Usage, Max: h.MaxUsage, Failcnt: h.Failcnt}
	}
	return out
}

// rdtStats reports the Intel RDT features the host has enabled.
func rdtStats(in *intelrdt.Stats) types.IntelRdt {
	var out types.IntelRdt
	if in == nil {
		return out
	}
	out.Schemata = in.Schemata
	if intelrdt.IsCATEnabled() {
		info := types.L3CacheInfo(*in.L3CacheInfo)
		out.L3CacheInfo = &info
		out.L3CacheSchemaRoot, out.L3CacheSchema = in.L3CacheSchemaRoot, in.L3CacheSchema
	}
	if intelrdt.IsMBAEnabled() {
		info := types.MemBwInfo(*in.MemBwInfo)
		out.MemBwInfo = &info
		out.MemBwSchemaRoot, out.MemBwSchema = in.MemBwSchemaRoot, in.MemBwSchema
	}
	if intelrdt.IsMBMEnabled() {
		out.MBMStats = in.MBMStats
	}
	if intelrdt.IsCMTEnabled() {
		out.CMTStats = in.CMTStats
	}
	return out
}
