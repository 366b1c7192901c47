package main

import (
	"fmt"

	"github.com/moatsandbox/moat/runtime"
	"github.com/urfave/cli"
)

// arity is how many arguments a command takes; max < 0 is no limit.
type arity struct{ min, max int }

var (
	noArgs    = arity{0, 0}
	idOnly    = arity{1, 1}
	idAndArgs = arity{1, -1}
)

// check rejects a wrong number of arguments with runc's message, after
// printing the command's help on stdout.
func (a arity) check(ctx *cli.Context) error {
	n, name := ctx.NArg(), ctx.Command.Name
	var err error
	switch {
	case a.min == a.max && n != a.min:
		err = fmt.Errorf("moat: %q requires exactly %d argument(s)", name, a.min)
	case n < a.min:
		err = fmt.Errorf("moat: %q requires a minimum of %d argument(s)", name, a.min)
	case a.max >= 0 && n > a.max:
		err = fmt.Errorf("moat: %q requires a maximum of %d argument(s)", name, a.max)
	default:
		return nil
	}
	fmt.Fprint(ctx.App.Writer, "Incorrect Usage.\n\n")
	_ = cli.ShowCommandHelp(ctx, name)
	return err
}

// command completes a container command: it checks the arguments, then
// runs do with the runtime the global options configured.
func command(c cli.Command, args arity, do func(*cli.Context, *runtime.Runtime) error) cli.Command {
	c.Action = func(ctx *cli.Context) error {
		if err := args.check(ctx); err != nil {
			return err
		}
		return do(ctx, ctx.App.Metadata[runtimeKey].(*runtime.Runtime))
	}
	return c
}

// containerID is a command's first argument.
func containerID(ctx *cli.Context) string {
	return ctx.Args().First()
}
