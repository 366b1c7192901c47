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
//     except SIGCHLD, SIGURG (the Go runtime's preemption), SIGPIPE,
//     SIGTTIN and SIGTTOU (moat-init's own terminal and pipe state).
//   - Every child that exits is reaped: orphans re-parented to moat-init as
//     PID 1, or as a child subreaper when it is not PID 1.
//
// The program starts first; the signals are registered while it runs.
// Registering for all of them costs milliseconds on a small VM, since the
// Go runtime updates the mask of its signal thread once per signal, a
// round trip between two threads each time. Only then is the readiness
// FIFO signalled, so `moat start` and `moat run -d` (and every `moat kill`
// after them) wait for the registration, and so do the signals an attached
// `moat run` relays. A signal that reaches moat-init before it by another
// way (from a process in the container, or sent to its pid from the host)
// gets the Go runtime's default: ignored, or, for SIGHUP, SIGINT, SIGQUIT,
// SIGABRT and SIGTERM, the end of moat-init and with it of the container.
//
// Reap returns as soon as the program exits, whether or not the
// registration has finished: the calling thread waits for it (and reaps
// the orphans) itself. Any remaining descendants die with the container's
// PID namespace (or are re-parented upwards). The caller is expected to
// exit right away.
func Reap(p *Program) (int, error) {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return ExitConfineFailed, fmt.Errorf("become child subreaper: %w", err)
		}
	}
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
	go relaySignals(pid, p.ready)
	return waitProgram(pid)
}

// relaySignals registers for every signal, signals readiness (fd from
// readyFD, -1 for none) and forwards what it receives to the program.
// The registration is never undone: signal.Stop waits for the runtime's
// signal delivery to go idle, and moat-init exits once the program has.
func relaySignals(program, ready int) {
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs)
	if err := signalReady(ready); err != nil {
		fmt.Fprintln(os.Stderr, "moat-init: "+err.Error())
	}
	for sig := range sigs {
		s, ok := sig.(syscall.Signal)
		if !ok {
			continue
		}
		switch s {
		case syscall.SIGCHLD, syscall.SIGURG, syscall.SIGPIPE, syscall.SIGTTIN, syscall.SIGTTOU:
		default:
			_ = syscall.Kill(program, s)
		}
	}
}

// waitProgram reaps every child that exits until the program does, and
// returns the status to exit with.
func waitProgram(program int) (int, error) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return ExitConfineFailed, fmt.Errorf("wait for the program: %w", err)
		}
		if pid != program {
			continue
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
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
