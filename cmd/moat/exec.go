package main

import (
	"fmt"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

var execCommand = command(cli.Command{
	Name:      "exec",
	Usage:     "run another process in a running container",
	ArgsUsage: "<container-id> <command> [args...]  |  -p process.json <container-id>",
	Description: `exec starts a process in a running container: the spec's process with the
given command and the options below applied, or the process a process.json
file describes. Unless detached, moat exits with the process's exit
status, or 255 when exec itself fails.`,
	// Options after the container id belong to the command.
	SkipArgReorder: true,
	Flags: []cli.Flag{
		consoleSocketFlag,
		cli.StringFlag{Name: "pidfd-socket", Usage: "unix socket to send a pidfd of the new process to"},
		cli.StringFlag{Name: "cwd", Usage: "working directory of the process, in the container"},
		cli.StringSliceFlag{Name: "env, e", Usage: "add NAME=VALUE to the environment (repeatable)"},
		cli.BoolFlag{Name: "tty, t", Usage: "give the process a pseudo-terminal"},
		cli.StringFlag{Name: "user, u", Usage: "run as UID[:GID]"},
		cli.Int64SliceFlag{Name: "additional-gids, g", Usage: "add a supplementary group id (repeatable)"},
		cli.StringFlag{Name: "process, p", Usage: "process.json file describing the whole process; the process options are then ignored"},
		cli.BoolFlag{Name: "detach, d", Usage: "return once the process runs"},
		pidFileFlag,
		cli.StringFlag{Name: "process-label", Usage: "SELinux label of the process"},
		cli.StringFlag{Name: "apparmor", Usage: "AppArmor profile of the process"},
		cli.BoolFlag{Name: "no-new-privs", Usage: "set no_new_privs on the process (--no-new-privs=false clears it; default: as the spec says)"},
		cli.StringSliceFlag{Name: "cap, c", Usage: "add a capability to the process's bounding, effective and permitted sets (repeatable)"},
		preserveFDsFlag,
		cli.StringSliceFlag{Name: "cgroup", Usage: "start in an existing sub-cgroup: PATH (cgroup v2) or CONTROLLER[,CONTROLLER...]:PATH (v1, repeatable)"},
		cli.BoolFlag{Name: "ignore-paused", Usage: "exec even into a paused container"},
	},
}, idAndArgs, func(ctx *cli.Context, rt *runtime.Runtime) error {
	status, err := rt.Exec(execOptions(ctx))
	if err != nil {
		// 255 tells a failed exec from the process's own failure.
		return &statusError{status: 255, err: fmt.Errorf("exec failed: %w", err)}
	}
	return exitWith(status)
})

func execOptions(ctx *cli.Context) runtime.ExecOpts {
	o := runtime.ExecOpts{
		ID:             containerID(ctx),
		Args:           ctx.Args().Tail(),
		Process:        ctx.String("process"),
		ConsoleSocket:  ctx.String("console-socket"),
		PidfdSocket:    ctx.String("pidfd-socket"),
		Detach:         ctx.Bool("detach"),
		PidFile:        ctx.String("pid-file"),
		PreserveFDs:    ctx.Int("preserve-fds"),
		Cgroups:        ctx.StringSlice("cgroup"),
		IgnorePaused:   ctx.Bool("ignore-paused"),
		Cwd:            ctx.String("cwd"),
		Env:            ctx.StringSlice("env"),
		TTY:            ctx.Bool("tty"),
		User:           ctx.String("user"),
		AdditionalGIDs: ctx.Int64Slice("additional-gids"),
		ProcessLabel:   ctx.String("process-label"),
		AppArmor:       ctx.String("apparmor"),
		Caps:           ctx.StringSlice("cap"),
	}
	if ctx.IsSet("no-new-privs") {
		nnp := ctx.Bool("no-new-privs")
		o.NoNewPrivs = &nnp
	}
	return o
}
