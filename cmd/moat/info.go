package main

import (
	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var featuresCommand = command(cli.Command{
	Name:        "features",
	Usage:       "print what this runtime supports, as JSON",
	Description: `features prints the runtime-spec "features" document (features.md in the runtime-spec).`,
}, noArgs, func(ctx *cli.Context, rt *runtime.Runtime) error {
	return rt.Features()
})

var specCommand = command(cli.Command{
	Name:  "spec",
	Usage: "write a starter config.json",
	Description: `spec writes an example config.json into the bundle directory: it runs "sh"
on a terminal in the bundle's "rootfs". Edit it to fit the image.`,
	Flags: []cli.Flag{
		cli.StringFlag{Name: "bundle, b", Usage: "directory to write config.json into (default: the current directory)"},
		cli.BoolFlag{Name: "rootless", Usage: "adjust the spec for a container started without root"},
	},
}, noArgs, func(ctx *cli.Context, _ *runtime.Runtime) error {
	return runtime.Spec(ctx.String("bundle"), ctx.Bool("rootless"))
})

// checkpoint and restore exist so that callers get a clear error instead
// of "unknown command". Their options are accepted and ignored.
var checkpointCommand = cli.Command{
	Name:            "checkpoint",
	Usage:           "checkpoint a running container (not supported by moat)",
	ArgsUsage:       "<container-id>",
	SkipFlagParsing: true,
	Action: func(ctx *cli.Context) error {
		return runtime.Checkpoint(lastArg(ctx))
	},
}

var restoreCommand = cli.Command{
	Name:            "restore",
	Usage:           "restore a container from a checkpoint (not supported by moat)",
	ArgsUsage:       "<container-id>",
	SkipFlagParsing: true,
	Action: func(ctx *cli.Context) error {
		return runtime.Restore(lastArg(ctx))
	},
}

// lastArg is the container id of a command whose options are not parsed.
func lastArg(ctx *cli.Context) string {
	args := ctx.Args()
	if len(args) == 0 {
		return ""
	}
	return args[len(args)-1]
}
