package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/docker/go-units"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// UpdateOpts are the options of update. The limit options hold their
// text as given ("" when absent) and are parsed as runc parses them.
type UpdateOpts struct {
	ID string
	// Resources is a runtime-spec LinuxResources JSON file, or "-" for
	// Stdin. When set, the limit options are ignored.
	Resources string
	Stdin     io.Reader

	BlkioWeight  int
	CPUPeriod    string
	CPUQuota     string
	CPUBurst     string
	CPUShare     string
	CPURtPeriod  string
	CPURtRuntime string
	CpusetCpus   string
	CpusetMems   string
	CPUIdle      string
	// Memory sizes take units ("64m"); -1 means unlimited.
	Memory            string
	MemoryReservation string
	MemorySwap        string
	KernelMemory      string
	KernelMemoryTCP   string
	// PidsLimit is nil unless --pids-limit was given.
	PidsLimit     *int
	L3CacheSchema string
	MemBwSchema   string
}

// resources returns the requested limits. Unset limits are nil, except
// that the memory, CPU, block I/O and pids sections always exist.
func (o *UpdateOpts) resources() (*specs.LinuxResources, error) {
	noCheck := false
	res := &specs.LinuxResources{
		// CheckBeforeUpdate false, not nil: update never checks the
		// usage against a lower memory limit unless the file asks for it.
		Memory:  &specs.LinuxMemory{CheckBeforeUpdate: &noCheck},
		CPU:     &specs.LinuxCPU{},
		BlockIO: &specs.LinuxBlockIO{},
		Pids:    &specs.LinuxPids{},
	}
	var err error
	if o.Resources != "" {
		err = o.readResources(res)
	} else {
		err = o.parseLimits(res)
	}
	if err != nil {
		return nil, err
	}
	// Combinations libcontainer would refuse.
	if lim := res.Memory.Limit; lim != nil && *lim == -1 && res.Memory.Swap == nil {
		// An unlimited memory limit needs a swap limit.
		res.Memory.Swap = new(int64)
	}
	if res.CPU.Idle != nil && res.CPU.Shares == nil {
		// Writing cpu.idle needs the weight written too.
		res.CPU.Shares = new(uint64)
	}
	if res.Memory.Kernel != nil || res.Memory.KernelTCP != nil { //nolint:staticcheck // Deprecated, still accepted.
		logrus.Warn("kernel memory limits are no longer supported and are ignored")
	}
	return res, nil
}

// readResources decodes the --resources file over res.
func (o *UpdateOpts) readResources(res *specs.LinuxResources) error {
	in := o.Stdin
	if o.Resources != "-" {
		f, err := os.Open(o.Resources)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	} else if in == nil {
		in = os.Stdin
	}
	if err := json.NewDecoder(in).Decode(res); err != nil {
		return fmt.Errorf("parse resources %s: %w", o.Resources, err)
	}
	// A section set to null comes back empty.
	if res.Memory == nil {
		res.Memory = &specs.LinuxMemory{}
	}
	if res.CPU == nil {
		res.CPU = &specs.LinuxCPU{}
	}
	if res.BlockIO == nil {
		res.BlockIO = &specs.LinuxBlockIO{}
	}
	if res.Pids == nil {
		res.Pids = &specs.LinuxPids{}
	}
	return nil
}

// parseLimits fills res from the limit options.
func (o *UpdateOpts) parseLimits(res *specs.LinuxResources) error {
	var p limitParser
	cpu, mem := res.CPU, res.Memory
	cpu.Idle = p.signed("cpu-idle", o.CPUIdle)
	cpu.Burst = p.unsigned("cpu-burst", o.CPUBurst)
	cpu.Period = p.unsigned("cpu-period", o.CPUPeriod)
	cpu.RealtimePeriod = p.unsigned("cpu-rt-period", o.CPURtPeriod)
	cpu.Shares = p.unsigned("cpu-share", o.CPUShare)
	cpu.Quota = p.signed("cpu-quota", o.CPUQuota)
	cpu.RealtimeRuntime = p.signed("cpu-rt-runtime", o.CPURtRuntime)
	mem.Limit = p.bytes("memory", o.Memory)
	mem.Swap = p.bytes("memory-swap", o.MemorySwap)
	mem.Kernel = p.bytes("kernel-memory", o.KernelMemory) //nolint:staticcheck // Deprecated, still accepted.
	mem.KernelTCP = p.bytes("kernel-memory-tcp", o.KernelMemoryTCP)
	mem.Reservation = p.bytes("memory-reservation", o.MemoryReservation)
	if p.err != nil {
		return p.err
	}
	cpu.Cpus, cpu.Mems = o.CpusetCpus, o.CpusetMems
	if o.BlkioWeight != 0 {
		w := uint16(o.BlkioWeight)
		res.BlockIO.Weight = &w
	}
	if o.PidsLimit != nil {
		n := int64(*o.PidsLimit)
		res.Pids.Limit = &n
	}
	return nil
}

// limitParser parses limit options, keeping the first error.
type limitParser struct{ err error }

func (p *limitParser) fail(name string, err error) {
	if p.err == nil {
		p.err = fmt.Errorf("invalid value for %s: %w", name, err)
	}
}

func (p *limitParser) unsigned(name, text string) *uint64 {
	if text == "" {
		return nil
	}
	v, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		p.fail(name, err)
		return nil
	}
	return &v
}

func (p *limitParser) signed(name, text string) *int64 {
	if text == "" {
		return nil
	}
	v, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		p.fail(name, err)
		return nil
	}
	return &v
}

// bytes reads a size with an optional unit suffix, or -1 (unlimited).
func (p *limitParser) bytes(name, text string) *int64 {
	if text == "" {
		return nil
	}
	v := int64(-1)
	if text != "-1" {
		var err error
		if v, err = units.RAMInBytes(text); err != nil {
			p.fail(name, err)
			return nil
		}
	}
	return &v
}
