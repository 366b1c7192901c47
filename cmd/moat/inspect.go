package main

import (
	"time"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var stateCommand = command(cli.Command{
	Name:        "state",
	Usage:       "print a container's state as JSON",
	ArgsUsage:   "<container-id>",
	Description: `state prints the container's id, status, pid, bundle, root filesystem, creation time and annotations.`,
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.State(containerID(ctx))
})

var listCommand = command(cli.Command{
	Name:        "list",
	Usage:       "list the containers under the state root",
	ArgsUsage:   " ",
	Description: `list shows every container whose state is under --root.`,
	Flags: []cli.Flag{
		cli.StringFlag{Name: "format, f", Value: "table", Usage: "output format: table or json"},
		cli.BoolFlag{Name: "quiet, q", Usage: "print the container ids only"},
	},
}, noArgs, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.List(runtime.ListOpts{Format: ctx.String("format"), Quiet: ctx.Bool("quiet")})
})

var psCommand = command(cli.Command{
	Name:      "ps",
	Usage:     "show the processes of a container",
	ArgsUsage: "<container-id> [ps options]",
	Description: `In table format, ps runs ps(1) with the given options (default -ef) and
keeps its header and the lines of the container's processes; in json
format it prints their pids.`,
	// Options after the container id are ps's.
	SkipArgReorder: true,
	Flags: []cli.Flag{
		cli.StringFlag{Name: "format, f", Value: "table", Usage: "output format: table or json"},
	},
}, idAndArgs, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Ps(containerID(ctx), ctx.String("format"), ctx.Args().Tail())
})

var eventsCommand = command(cli.Command{
	Name:      "events",
	Usage:     "print a container's resource usage and OOM kills as JSON lines",
	ArgsUsage: "<container-id>",
	Description: `events prints a "stats" event every interval and an "oom" event whenever
the OOM killer acts in the container, until the container stops.`,
	Flags: []cli.Flag{
		cli.DurationFlag{Name: "interval", Value: 5 * time.Second, Usage: "time between two stats events"},
		cli.BoolFlag{Name: "stats", Usage: "print one stats event and exit"},
	},
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Events(runtime.EventsOpts{
		ID:       containerID(ctx),
		Interval: ctx.Duration("interval"),
		Stats:    ctx.Bool("stats"),
	})
})
