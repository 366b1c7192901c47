package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

// runtimeCmd runs one of the runc-compatible commands, with runc's global
// options, and returns moat's exit status.
func runtimeCmd(args []string, stdout, stderr io.Writer) int {
	app := cli.NewApp()
	app.Name = "moat"
	app.Usage = "an OCI runtime that makes any container a sandbox for an AI agent"
	app.Version = version
	app.Writer, app.ErrWriter = stdout, stderr
	app.Flags = globalFlags
	app.Commands = append(commands(), boxCommand, policyCommand(stdout, stderr), denialsCommand(stdout), versionCommand)
	cli.VersionPrinter = func(ctx *cli.Context) { printVersion(ctx.App.Writer) }
	app.Before = func(ctx *cli.Context) error {
		rt, err := newRuntime(ctx)
		if err != nil {
			return err
		}
		rt.Stdout = stdout
		ctx.App.Metadata = map[string]any{runtimeKey: rt}
		return nil
	}
	status := 0
	app.Action = func(ctx *cli.Context) error {
		// Reached when no command matched.
		if ctx.NArg() > 0 {
			fmt.Fprintf(stderr, "moat: unknown command %q\n\n", ctx.Args().First())
		}
		io.WriteString(stderr, usage)
		status = 2
		return nil
	}
	err := app.Run(append([]string{"moat"}, args...))
	var se *statusError
	switch {
	case err == nil:
		return status
	case errors.As(err, &se):
		if se.err != nil {
			runtime.ReportError(se.err, stderr)
		}
		return se.status
	}
	runtime.ReportError(err, stderr)
	return 1
}

// commands are the runc-compatible commands, in the order help lists
// them.
func commands() []cli.Command {
	return []cli.Command{
		checkpointCommand, createCommand, deleteCommand, eventsCommand,
		execCommand, featuresCommand, killCommand, listCommand,
		pauseCommand, psCommand, restoreCommand, resumeCommand,
		runCommand, specCommand, startCommand, stateCommand, updateCommand,
	}
}

var globalFlags = []cli.Flag{
	cli.BoolFlag{Name: "debug", Usage: "log at debug level"},
	cli.StringFlag{Name: "log", Usage: "append the log to this file rather than writing it to stderr"},
	cli.StringFlag{Name: "log-format", Value: "text", Usage: "log line format: text or json"},
	cli.StringFlag{Name: "root", Value: runtime.DefaultRoot, Usage: "directory that keeps the containers' state; best on a tmpfs"},
	cli.BoolFlag{Name: "systemd-cgroup", Usage: `manage cgroups through systemd; a spec's cgroupsPath is then "slice:prefix:name"`},
	cli.StringFlag{Name: "rootless", Value: "auto", Usage: "tolerate cgroup permission errors: true, false or auto"},
	cli.StringFlag{Name: "config", Value: policy.DefaultConfigPath, Usage: "moat's admin configuration file"},
	cli.StringFlag{Name: "policy", Usage: "policy file for containers that do not name one (sandbox mode only)"},
}

// runtimeKey is where Before leaves the runtime in the app's metadata.
const runtimeKey = "runtime"

// newRuntime reads the global options.
func newRuntime(ctx *cli.Context) (*runtime.Runtime, error) {
	err := runtime.ConfigureLogging(runtime.LogOptions{
		File:   ctx.GlobalString("log"),
		Format: ctx.GlobalString("log-format"),
		Debug:  ctx.GlobalBool("debug"),
	})
	if err != nil {
		return nil, err
	}
	root, err := filepath.Abs(ctx.GlobalString("root"))
	if err != nil {
		return nil, fmt.Errorf("--root: %w", err)
	}
	// "", "." in / or enough ".." all end up here.
	if root == "/" {
		return nil, errors.New("option --root argument should not be set to /")
	}
	rt := &runtime.Runtime{
		Root:          root,
		RootSet:       ctx.GlobalIsSet("root"),
		SystemdCgroup: ctx.GlobalBool("systemd-cgroup"),
		ConfigPath:    ctx.GlobalString("config"),
		PolicyPath:    ctx.GlobalString("policy"),
		Version:       version,
	}
	if s := ctx.GlobalString("rootless"); s != "" && s != "auto" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("invalid --rootless value %q: %w", s, err)
		}
		rt.Rootless = &b
	}
	return rt, nil
}

// statusError ends a command with an exit status other than 0 and 1,
// reporting err first when set. It has no ExitCode method, so urfave/cli
// leaves exiting to runtimeCmd.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return "exit status " + strconv.Itoa(e.status)
}

func (e *statusError) Unwrap() error { return e.err }

// exitWith makes moat exit with status, a process's exit status.
func exitWith(status int) error {
	if status == 0 {
		return nil
	}
	return &statusError{status: status}
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "moat version %s\n", version)
}

var versionCommand = cli.Command{
	Name:  "version",
	Usage: "print moat's version",
	Action: func(ctx *cli.Context) error {
		printVersion(ctx.App.Writer)
		return nil
	},
}

// policyCommand only lists `moat policy` in the help: run dispatches it
// before the global options are parsed.
func policyCommand(stdout, stderr io.Writer) cli.Command {
	return cli.Command{
		Name:            "policy",
		Usage:           "validate policies and decide connections against them (moat policy help)",
		SkipFlagParsing: true,
		Action: func(ctx *cli.Context) error {
			rt, _ := ctx.App.Metadata[runtimeKey].(*runtime.Runtime)
			return exitWith(policyCmd(ctx.Args(), stdout, stderr, rt))
		},
	}
}
