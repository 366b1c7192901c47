package main

import (
	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var startCommand = command(cli.Command{
	Name:        "start",
	Usage:       "let a created container run its program",
	ArgsUsage:   "<container-id>",
	Description: `start lets the process of a container made by "moat create" go on to run the spec's program.`,
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Start(containerID(ctx))
})

var killCommand = command(cli.Command{
	Name:      "kill",
	Usage:     "send a signal (SIGTERM unless given) to a container's first process",
	ArgsUsage: "<container-id> [signal]",
	Description: `The signal is a number or a name, with or without "SIG", in any case:
9, KILL, SIGKILL and kill are the same.`,
	Flags: []cli.Flag{
		cli.BoolFlag{Name: "all, a", Usage: "obsolete: only makes signalling a stopped container succeed", Hidden: true},
	},
}, arity{1, 2}, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Kill(containerID(ctx), ctx.Args().Get(1), ctx.Bool("all"))
})

var deleteCommand = command(cli.Command{
	Name:      "delete",
	Usage:     "delete a container and everything it holds",
	ArgsUsage: "<container-id>",
	Description: `delete removes a stopped (or created, never started) container: its
remaining processes, cgroups and state.`,
	Flags: []cli.Flag{
		cli.BoolFlag{Name: "force, f", Usage: "delete the container in any state, SIGKILLing its processes first"},
	},
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Delete(containerID(ctx), ctx.Bool("force"))
})

var pauseCommand = command(cli.Command{
	Name:        "pause",
	Usage:       "freeze every process of a container",
	ArgsUsage:   "<container-id>",
	Description: `pause freezes the container's processes with the cgroup freezer until "moat resume".`,
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Pause(containerID(ctx))
})

var resumeCommand = command(cli.Command{
	Name:        "resume",
	Usage:       "thaw a paused container",
	ArgsUsage:   "<container-id>",
	Description: `resume lets the processes of a container frozen by "moat pause" run again.`,
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Resume(containerID(ctx))
})
