package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli"

	"github.com/moatsandbox/moat/runtime"
	"github.com/moatsandbox/moat/sidecar/declog"
)

func denialsCommand(stdout io.Writer) cli.Command {
	return cli.Command{
		Name:      "denials",
		Usage:     "print the sandbox's refused connections and requests, from its decision log",
		ArgsUsage: "ID",
		Description: `denials reads container ID's decision log (engines: opa, ssrf, l7,
identity, bypass) and prints every deny, audit and bypass record, one per
line, or with --all every decision. It works for containers any engine
created, whatever their --root, and after they are deleted (the log stays
in the admin configuration's log_dir).`,
		Flags: []cli.Flag{
			cli.BoolFlag{Name: "json", Usage: "print the records as JSON lines"},
			cli.BoolFlag{Name: "follow, f", Usage: "keep printing records as they are logged"},
			cli.BoolFlag{Name: "all", Usage: "print allowed connections too"},
		},
		Action: func(ctx *cli.Context) error {
			if ctx.NArg() != 1 {
				return fmt.Errorf("moat denials: exactly one container id is required")
			}
			rt := ctx.App.Metadata[runtimeKey].(*runtime.Runtime)
			id := ctx.Args().First()
			var dir string
			switch info, err := rt.Sandbox(id); {
			case err != nil:
				// A deleted container's log stays behind.
				if dir, err = rt.DecisionLogDir(id); err != nil {
					return err
				}
			case info.Sidecar == nil:
				return fmt.Errorf("container %s has no network egress (its policy has no network section), so nothing is decided or logged", id)
			default:
				if info.SidecarPID == 0 {
					fmt.Fprintf(os.Stderr, "moat: the sidecar of %s is not running: the sandbox has no egress at all\n", id)
				}
				dir = info.Sidecar.LogDir
			}
			print := printer(stdout, ctx.Bool("json"), ctx.Bool("all"))
			if !ctx.Bool("follow") {
				recs, err := declog.Read(dir)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				for _, r := range recs {
					if err := print(r); err != nil {
						return err
					}
				}
				return nil
			}
			c, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err := declog.Follow(c, dir, 0, print)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
}

// printer prints the records `moat denials` shows.
func printer(w io.Writer, asJSON, all bool) func(declog.Record) error {
	enc := json.NewEncoder(w)
	return func(r declog.Record) error {
		if !all && r.Action == declog.ActionAllow {
			return nil
		}
		if asJSON {
			return enc.Encode(r)
		}
		_, err := fmt.Fprintln(w, declog.Format(r))
		return err
	}
}
