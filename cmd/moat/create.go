package main

import (
	"fmt"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

// Options of create and run; exec shares some.
var (
	bundleFlag = cli.StringFlag{
		Name:  "bundle, b",
		Usage: "bundle directory (default: the current directory)",
	}
	consoleSocketFlag = cli.StringFlag{
		Name:  "console-socket",
		Usage: "unix socket to send the master end of the process's pseudo-terminal to (a detached process with a terminal needs one)",
	}
	pidFileFlag = cli.StringFlag{
		Name:  "pid-file",
		Usage: "write the process's pid (as moat sees it) to this file",
	}
	preserveFDsFlag = cli.IntFlag{
		Name:  "preserve-fds",
		Usage: "hand N more of moat's open descriptors to the process, numbered after stdio and any socket-activation ones",
	}
	initFlags = []cli.Flag{
		bundleFlag,
		consoleSocketFlag,
		cli.StringFlag{Name: "pidfd-socket", Usage: "unix socket to send a pidfd of the container's first process to"},
		pidFileFlag,
		cli.BoolFlag{Name: "no-pivot", Usage: "enter the root filesystem without pivot_root(2), as a rootfs on a ramdisk requires"},
		cli.BoolFlag{Name: "no-new-keyring", Usage: "keep moat's session keyring rather than giving the container a new one"},
		preserveFDsFlag,
	}
)

var createCommand = command(cli.Command{
	Name:      "create",
	Usage:     "create a container from a bundle, its process waiting for start",
	ArgsUsage: "<container-id>",
	Description: `create sets up a container from a bundle, a directory holding the spec
(config.json) and usually the root filesystem, and starts its process up
to the point of running the spec's program; "moat start" lets it go on.`,
	Flags: initFlags,
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	status, err := rt.Create(createOptions(ctx))
	if err != nil {
		return fmt.Errorf("moat create failed: %w", err)
	}
	return exitWith(status)
})

var runCommand = command(cli.Command{
	Name:      "run",
	Usage:     "create and start a container",
	ArgsUsage: "<container-id>",
	Description: `run creates a container from a bundle and starts its program. Unless
detached, moat relays stdio and signals to the program, exits with its exit
status and then deletes the container.`,
	Flags: append([]cli.Flag{
		cli.BoolFlag{Name: "detach, d", Usage: "return once the program runs; it keeps moat's stdio"},
		cli.BoolFlag{Name: "keep", Usage: "keep the stopped container when the program exits"},
		cli.BoolFlag{Name: "no-subreaper", Usage: "leave the container's orphaned processes to be reaped by others than moat"},
	}, initFlags...),
}, idOnly, func(ctx *cli.Context, rt *runtime.Runtime) error {
	status, err := rt.Run(createOptions(ctx))
	if err != nil {
		return fmt.Errorf("moat run failed: %w", err)
	}
	return exitWith(status)
})

func createOptions(ctx *cli.Context) runtime.CreateOpts {
	return runtime.CreateOpts{
		ID:            containerID(ctx),
		Bundle:        ctx.String("bundle"),
		PidFile:       ctx.String("pid-file"),
		ConsoleSocket: ctx.String("console-socket"),
		PidfdSocket:   ctx.String("pidfd-socket"),
		NoPivot:       ctx.Bool("no-pivot"),
		NoNewKeyring:  ctx.Bool("no-new-keyring"),
		PreserveFDs:   ctx.Int("preserve-fds"),
		Detach:        ctx.Bool("detach"),
		Keep:          ctx.Bool("keep"),
		NoSubreaper:   ctx.Bool("no-subreaper"),
	}
}
