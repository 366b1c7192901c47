package main

import (
	"os"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var updateCommand = command(cli.Command{
	Name:      "update",
	Usage:     "change a container's resource limits",
	ArgsUsage: "<container-id>",
	Description: `update changes the cgroup limits (and Intel RDT schemata) of a running
container, from the options or from a runtime-spec LinuxResources JSON
document given with --resources. Memory sizes take a unit suffix (k, m, g).`,
	Flags: []cli.Flag{
		cli.StringFlag{Name: "resources, r", Usage: "LinuxResources JSON file, or - for stdin; the other options are then ignored"},
		cli.IntFlag{Name: "blkio-weight", Usage: "block I/O weight of the cgroup (10 to 1000)"},
		cli.StringFlag{Name: "cpu-period", Usage: "CFS period in microseconds (0: the kernel's default)"},
		cli.StringFlag{Name: "cpu-quota", Usage: "CFS quota: CPU time allowed per period, in microseconds"},
		cli.StringFlag{Name: "cpu-burst", Usage: "CFS burst: unused quota that may carry over to a period, in microseconds"},
		cli.StringFlag{Name: "cpu-share", Usage: "CPU shares, the weight against other cgroups"},
		cli.StringFlag{Name: "cpu-rt-period", Usage: "real-time scheduling period in microseconds (0: the kernel's default)"},
		cli.StringFlag{Name: "cpu-rt-runtime", Usage: "real-time CPU time allowed per period, in microseconds"},
		cli.StringFlag{Name: "cpuset-cpus", Usage: "CPUs the container may run on (e.g. 0-3,6)"},
		cli.StringFlag{Name: "cpuset-mems", Usage: "memory nodes the container may use"},
		cli.StringFlag{Name: "kernel-memory", Usage: "obsolete and ignored", Hidden: true},
		cli.StringFlag{Name: "kernel-memory-tcp", Usage: "obsolete and ignored", Hidden: true},
		cli.StringFlag{Name: "memory", Usage: "memory limit (-1: none)"},
		cli.StringFlag{Name: "cpu-idle", Usage: "1 runs the cgroup under SCHED_IDLE, 0 as normal"},
		cli.StringFlag{Name: "memory-reservation", Usage: "soft memory limit"},
		cli.StringFlag{Name: "memory-swap", Usage: "limit of memory and swap together (-1: no swap limit)"},
		cli.IntFlag{Name: "pids-limit", Usage: "most processes the container may have"},
		cli.StringFlag{Name: "l3-cache-schema", Usage: "Intel RDT L3 cache allocation schema"},
		cli.StringFlag{Name: "mem-bw-schema", Usage: "Intel RDT memory bandwidth allocation schema"},
	},
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Update(updateOptions(ctx))
})

func updateOptions(ctx *cli.Context) runtime.UpdateOpts {
	o := runtime.UpdateOpts{
		ID:        containerID(ctx),
		Resources: ctx.String("resources"),
		Stdin:     os.Stdin,

		BlkioWeight:       ctx.Int("blkio-weight"),
		CPUPeriod:         ctx.String("cpu-period"),
		CPUQuota:          ctx.String("cpu-quota"),
		CPUBurst:          ctx.String("cpu-burst"),
		CPUShare:          ctx.String("cpu-share"),
		CPURtPeriod:       ctx.String("cpu-rt-period"),
		CPURtRuntime:      ctx.String("cpu-rt-runtime"),
		CpusetCpus:        ctx.String("cpuset-cpus"),
		CpusetMems:        ctx.String("cpuset-mems"),
		CPUIdle:           ctx.String("cpu-idle"),
		Memory:            ctx.String("memory"),
		MemoryReservation: ctx.String("memory-reservation"),
		MemorySwap:        ctx.String("memory-swap"),
		KernelMemory:      ctx.String("kernel-memory"),
		KernelMemoryTCP:   ctx.String("kernel-memory-tcp"),
		L3CacheSchema:     ctx.String("l3-cache-schema"),
		MemBwSchema:       ctx.String("mem-bw-schema"),
	}
	if ctx.IsSet("pids-limit") {
		limit := ctx.Int("pids-limit")
		o.PidsLimit = &limit
	}
	return o
}
