package confine

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reap runs the program as a child the way tini does and returns the status
// to exit with: the program's exit code, or 128+N when signal N killed it.
//
//   - The child gets its own process group and, when stdin is the
//     controlling terminal, the terminal's foreground (so job control and
//     ^C reach it directly under `docker run -it`).
//   - Every catchable signal moat-init receives is forwarded to the child,
//     except SIGCHLD (reaping), SIGURG (the Go runtime's preemption),
//     SIGPIPE, SIGTTIN and SIGTTOU (moat-init's own terminal and pipe state).
//   - Every child that exits is reaped: orphans re-parented to moat-init as
//     PID 1, or as a child subreaper when it is not PID 1 (`moat exec`).
//
// Reap returns as soon as the program exits; any remaining descendants die
// with the container's PID namespace (or are re-parented upwards). The
// signals stay registered: the caller is expected to exit right away.
func Reap(p *Program) (int, error) {
	return reap(p, notifyAsync())
}

// notifyAsync registers for every signal from another goroutine and
// returns a function that waits for the registration and yields the
// channel. Registration must complete before the fork, so that no SIGCHLD
// or early signal is lost.
func notifyAsync() func() chan os.Signal {
	done := make(chan chan os.Signal, 1)
	go func() {
		sigs := make(chan os.Signal, 128)
		signal.Notify(sigs)
		done <- sigs
	}()
	return func() chan os.Signal { return <-done }
}

func reap(p *Program, registered func() chan os.Signal) (int, error) {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return ExitConfineFailed, fmt.Errorf("become child subreaper: %w", err)
		}
	}
	// The registration is never undone: the caller exits as soon as reap
	// returns, and signal.Stop waits for the runtime's signal delivery to
	// go idle, which cost about 4 ms of every container's start.
	sigs := registered()

	attr := &syscall.ProcAttr{
		Env:   p.Env,
		Files: []uintptr{stdFD(0), stdFD(1), stdFD(2)},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	if isControllingTTY(0) {
		attr.Sys.Foreground = true
		attr.Sys.Ctty = 0
	}
	pid, err := syscall.ForkExec(p.Path, p.Args, attr)
	if err != nil {
		code := ExitCannotExec
		if errors.Is(err, syscall.ENOENT) {
			code = ExitNotFound
		}
		return code, &ExitError{code, fmt.Errorf("exec %s: %w", p.Path, err)}
	}

	for sig := range sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		switch s {
		case syscall.SIGCHLD:
			if status, done := reapAll(pid); done {
				return status, nil
			}
		case syscall.SIGURG, syscall.SIGPIPE, syscall.SIGTTIN, syscall.SIGTTOU:
		default:
			_ = syscall.Kill(pid, s)
		}
	}
	return ExitConfineFailed, errors.New("signal channel closed")
}

// reapAll collects every exited child. done reports that the program was
// among them, with the status to exit with.
func reapAll(program int) (status int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return status, done
		}
		if pid == program {
			done = true
			switch {
			case ws.Exited():
				status = ws.ExitStatus()
			case ws.Signaled():
				status = 128 + int(ws.Signal())
			}
		}
	}
}

// stdFD passes fd to the child when it is open and closes it there
// otherwise.
func stdFD(fd int) uintptr {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return ^uintptr(0)
	}
	return uintptr(fd)
}

// isControllingTTY reports whether fd is this process's controlling
// terminal (tcgetpgrp fails with ENOTTY otherwise).
func isControllingTTY(fd int) bool {
	_, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil
}
