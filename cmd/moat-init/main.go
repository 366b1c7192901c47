// Command moat-init is the first program of every sandboxed container
// process. The runtime bind-mounts it read-only at /.moat/init, its plan at
// /.moat/plan.json, and prepends it to the process args:
//
//	/.moat/init -- PROGRAM [ARGS...]
//
// (`/.moat/init PROGRAM [ARGS...]` works too; the `--` lets PROGRAM start
// with a dash). moat-init reads the plan, confines itself (network
// namespace, Landlock, seccomp, user and capabilities; see package confine)
// and then execs PROGRAM, or, in reap mode, runs it as a child, forwards
// signals, reaps orphans and exits with its status.
//
//	/.moat/init --exec -- PROGRAM [ARGS...]
//
// execs PROGRAM whatever the plan's mode: the runtime starts the processes
// of `moat exec` so. Like runc's, they are then the process the engine
// signals and waits for, and their orphans go to the container's init.
//
// Errors are one line on stderr, prefixed "moat-init: ", and the exit status
// says which kind: 127 the program was not found, 126 it could not be
// executed, 1 the plan could not be read or applied (nothing ran).
//
// For tests on a host, the environment variable MOAT_PLAN names another plan
// (a path, or an inherited fd number). It is honoured only where
// /.moat/plan.json does not exist, so nothing inside a sandbox can swap the
// plan, and it is removed from the program's environment.
//
// moat-init must be built static with CGO_ENABLED=0: it changes per-thread
// credentials with syscall.AllThreadsSyscall, which cgo disables.
//
// Go 1.25's container-aware GOMAXPROCS is switched off below: moat-init
// mostly waits for its program, and the cgroup CPU limit would change
// nothing it does. (Go 1.26's runtime still reads the limit once at start,
// to count the setting's effect, so this saves no system calls.)
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strconv"

	"github.com/moatsandbox/moat/confine"
)

// The confinement must happen on the main thread, which is also the one that
// execs or forks the program.
func init() { runtime.LockOSThread() }

// planEnv is the test override of the plan location.
const planEnv = "MOAT_PLAN"

// maxPlan bounds a plan read from a pipe; ParsePlan checks the real limit.
const maxPlan = 8 << 20

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "moat-init: "+err.Error())
	}
	os.Exit(code)
}

func run(args []string) (code int, err error) {
	defer func() {
		if r := recover(); r != nil {
			code, err = confine.ExitConfineFailed, fmt.Errorf("internal error: %v", r)
		}
	}()
	execMode := false
	if len(args) > 0 && args[0] == confine.ExecFlag {
		execMode, args = true, args[1:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		return confine.ExitNotFound, errors.New("usage: /.moat/init [--exec] [--] PROGRAM [ARGS...]")
	}
	plan, err := loadPlan()
	if err != nil {
		return confine.ExitConfineFailed, err
	}
	if execMode {
		plan.Mode = confine.ModeExec
	}
	return confine.Run(plan, args, confine.Options{})
}

// loadPlan reads /.moat/plan.json, or MOAT_PLAN where that file is absent.
func loadPlan() (*confine.Plan, error) {
	override, set := os.LookupEnv(planEnv)
	if set {
		_ = os.Unsetenv(planEnv)
	}
	if _, err := os.Stat(confine.PlanPath); !set || !errors.Is(err, fs.ErrNotExist) {
		return confine.ReadPlan(confine.PlanPath)
	}
	if fd, err := strconv.Atoi(override); err == nil {
		f := os.NewFile(uintptr(fd), "plan")
		if f == nil {
			return nil, fmt.Errorf("%s: fd %d is not open", planEnv, fd)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxPlan))
		if err != nil {
			return nil, fmt.Errorf("%s: read fd %d: %w", planEnv, fd, err)
		}
		return confine.ParsePlan(data)
	}
	return confine.ReadPlan(override)
}
