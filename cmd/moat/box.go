package main

import (
	"fmt"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var boxCommand = cli.Command{
	Name:      "box",
	Usage:     "run one command of this host in a sandbox, no container engine needed",
	ArgsUsage: "-- COMMAND [ARGS...]",
	Description: `box is the quickest way to try moat: it sandboxes COMMAND on this host.
The command sees the host's files read-only, except for the policy's
read_write paths and each --rw PATH, which stay writable; it gets a private
/tmp and /run, its own /proc and /dev, and new pid, mount, ipc and uts
namespaces. The policy (--policy, else the admin configuration's sources)
decides the user it runs as and, through Landlock and seccomp, what it may
touch, exactly as for a container.

The network is sandboxed as for a container: the command runs in an inner
network namespace off the host's, whose only way out is the sandbox's proxy
(HTTP_PROXY and friends point at it); the proxy decides every connection by
the policy's network_policies, destination and calling binary alike, and a
direct connection is refused at once. Without network_policies the command
has loopback only. ` + "`moat denials`" + ` shows the decisions while it runs.

box runs attached, on the caller's terminal when there is one, forwards
signals, exits with the command's exit status and removes the container and
its temporary bundle when the command ends. It needs root and the sandbox
on in the admin configuration.`,
	SkipArgReorder: true,
	Flags: []cli.Flag{
		cli.StringFlag{Name: "policy", Usage: "policy file for the command (default: the admin configuration's sources)"},
		cli.StringSliceFlag{Name: "rw", Usage: "host path the command may write; repeat for more"},
		cli.StringFlag{Name: "id", Usage: `container id (default "box-" and a random suffix)`},
	},
	Action: func(ctx *cli.Context) error {
		if ctx.NArg() == 0 {
			cli.ShowCommandHelp(ctx, ctx.Command.Name)
			return fmt.Errorf("moat box: no command given")
		}
		rt := ctx.App.Metadata[runtimeKey].(*runtime.Runtime)
		if p := ctx.String("policy"); p != "" {
			rt.PolicyPath = p
		}
		status, err := rt.Box(runtime.BoxOpts{
			ID:   ctx.String("id"),
			Args: ctx.Args(),
			RW:   ctx.StringSlice("rw"),
		})
		if err != nil {
			return fmt.Errorf("moat box failed: %w", err)
		}
		return exitWith(status)
	},
}
