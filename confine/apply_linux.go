package confine

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Options tune Confine and Run.
type Options struct {
	// Warn receives findings (a best_effort path skipped, Landlock
	// missing), one line each. nil writes "moat-init: LINE" to stderr.
	Warn func(line string)
}

func (o Options) warn(line string) {
	if o.Warn != nil {
		o.Warn(line)
		return
	}
	fmt.Fprintln(os.Stderr, "moat-init: "+line)
}

// Program is what runs once the process is confined.
type Program struct {
	Path string   // resolved executable
	Args []string // argv, Args[0] as given
	Env  []string // the environment with the plan's overrides

	// ready is the readiness FIFO that reap mode signals once it relays
	// signals (close-on-exec); -1 when there is none or it was signalled.
	ready int
}

// Confine applies plan to the calling process in the order the design
// fixes: no_new_privs (when planned: it only ever
// tightens, and lets the later steps work without CAP_SYS_ADMIN), setns
// into the planned network namespace, Landlock (every path opened first,
// then restrict), the seccomp programs in order (before the identity drop,
// so that without no_new_privs CAP_SYS_ADMIN is still there to load them),
// then groups, gid, uid and capabilities. It returns the program to run,
// resolved against the environment env plus the plan's overrides.
//
// In reap mode every thread changes (the process stays beside the
// program); in exec mode only the calling thread does, since the execve
// that follows ends every other thread (and ten stop-the-world rounds
// would cost about 2 ms of the start).
//
// The caller must run on the main thread, locked with runtime.LockOSThread
// from an init function, and be built with CGO_ENABLED=0 (per-thread state is
// changed with syscall.AllThreadsSyscall). On error the process may be
// partly confined and must exit without running anything; in exec mode it
// must run nothing but Exec afterwards.
func Confine(plan *Plan, argv, env []string, opts Options) (*Program, error) {
	runtime.LockOSThread() // nested with the caller's lock; never unlocked
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, &ExitError{ExitNotFound, errors.New("no program to run")}
	}
	env = MergeEnv(env, plan.Env)
	path, err := LookPath(argv[0], env)
	if err != nil {
		return nil, err
	}
	prog := &Program{Path: path, Args: argv, Env: env, ready: -1}

	t := everyThread
	if plan.Mode == ModeExec {
		t = execThread
	}
	if plan.NoNewPrivileges {
		if err := setNoNewPrivs(t); err != nil {
			return nil, err
		}
	}
	if plan.NetNS != nil {
		if err := joinNetNS(plan.NetNS, t); err != nil {
			return nil, err
		}
	}
	if prog.ready, err = readyFD(plan.Ready); err != nil {
		return nil, err
	}
	if plan.Mode == ModeExec {
		// In reap mode the start waits until signals are relayed (Reap).
		if err := signalReady(prog.ready); err != nil {
			return nil, err
		}
		prog.ready = -1
	}
	rs, err := prepareLandlock(plan.Landlock, path, opts.warn)
	if err != nil {
		return nil, err
	}
	if rs != nil {
		if err := rs.restrict(t); err != nil {
			return nil, err
		}
	}
	for _, p := range plan.Seccomp {
		if err := loadSeccomp(p, t); err != nil {
			return nil, err
		}
	}
	if err := dropIdentity(plan.Identity, plan.Capabilities, t); err != nil {
		return nil, err
	}
	return prog, nil
}

// Run confines the process with plan and runs argv with the current
// environment: exec'd in ModeExec (Run returns only on error), or forked
// and supervised in ModeReap, returning the status to exit with.
func Run(plan *Plan, argv []string, opts Options) (int, error) {
	prog, err := Confine(plan, argv, os.Environ(), opts)
	if err != nil {
		return ExitCode(err), err
	}
	if plan.Mode == ModeExec {
		err := Exec(prog)
		return ExitCode(err), err
	}
	return Reap(prog)
}

// Harden confines one of moat's own long-running processes (the sidecar)
// once its setup is done: no_new_privs, the identity and capabilities
// given, then NoExecFilter and moat's seccomp filter (which forbids any
// further filter), on every thread. The process can never exec afterwards,
// so the bounding set (which only limits what an execve gains) is dropped
// on the calling thread alone. It needs CGO_ENABLED=0, like Confine.
func Harden(id Identity, caps *Capabilities) error {
	if err := setNoNewPrivs(everyThread); err != nil {
		return err
	}
	if err := dropIdentity(id, caps, everyThread); err != nil {
		return err
	}
	for _, filter := range []func() (SeccompProgram, error){NoExecFilter, MoatFilter} {
		prog, err := filter()
		if err != nil {
			return err
		}
		if err := loadSeccomp(prog, everyThread); err != nil {
			return err
		}
	}
	return nil
}

// Exec replaces the process with the program.
func Exec(p *Program) error {
	err := syscall.Exec(p.Path, p.Args, p.Env)
	code := ExitCannotExec
	if errors.Is(err, syscall.ENOENT) {
		code = ExitNotFound
	}
	return &ExitError{code, fmt.Errorf("exec %s: %w", p.Path, err)}
}
