package runtime

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor runs before Go starts in `moat init` and
	// enters the container's namespaces.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Init runs `moat init`, the other end of a launch: libcontainer starts
// every process of a container by re-executing the moat binary as
// "/proc/self/exe init", and Init turns it into that process. It must be
// called before main runs (from an init function of package main) and
// does not return.
func Init() {
	libcontainer.Init()
}

// launch is one process moat starts in a container: the container's first
// process (create, run) or an additional one (exec).
type launch struct {
	container *libcontainer.Container
	process   *specs.Process
	// first marks the container's first process.
	first bool
	// createOnly starts the first process and leaves it waiting for
	// `moat start` (create); otherwise the process runs at once.
	createOnly bool
	// detach returns as soon as the process runs; create always does.
	detach bool
	// destroyOnExit removes the container when the launch fails and,
	// for an attached process, when it exits.
	destroyOnExit bool
	// onDestroy, when set, runs after the container is removed.
	onDestroy func()
	// subreaper makes moat the reaper of the process's orphans.
	subreaper     bool
	consoleSocket string
	pidfdSocket   string
	pidFile       string
	// inherit are files passed on by socket activation.
	inherit     []*os.File
	preserveFDs int
	// netns, when set, is the sandbox's inner network namespace, passed
	// after every other file; moat-init finds it by inode.
	netns *os.File
	// ready, when set, is the start-readiness FIFO (first process only).
	ready *os.File
	// beforeRun, when set, must return nil after the first process is
	// created and before it may run (the sandbox's sidecar coming up).
	beforeRun func() error
	// cgroupPaths are exec --cgroup's sub-cgroups, by controller.
	cgroupPaths map[string]string
}

// attached reports whether moat stays with the process until it exits.
func (l *launch) attached() bool {
	return !l.createOnly && !l.detach
}

// execute starts the process and returns the status moat exits with: the
// process's exit status when attached, else 0.
func (l *launch) execute() (status int, err error) {
	defer func() {
		if err != nil {
			l.destroy()
		}
	}()
	if err := l.checkConsoleOptions(); err != nil {
		return -1, err
	}
	p, err := toLibcontainer(l.process)
	if err != nil {
		return -1, err
	}
	p.Init = l.first
	p.SubCgroupPaths = l.cgroupPaths
	// libcontainer's init logs at moat's level.
	p.LogLevel = strconv.Itoa(int(logrus.GetLevel()))
	if err := l.passFiles(p); err != nil {
		return -1, err
	}
	// Signals are caught from here on, so that SIGCHLD for a process that
	// exits at once is not lost.
	signals := catchSignals(l.subreaper)
	streams, err := l.connectStdio(p)
	if err != nil {
		return -1, err
	}
	defer streams.release()
	if l.pidfdSocket != "" {
		conn, err := dialForProcess(l.pidfdSocket, "pidfd socket", &p.PidfdSocket)
		if err != nil {
			return -1, err
		}
		defer conn.Close()
		defer p.PidfdSocket.Close()
	}
	switch {
	case l.beforeRun != nil:
		// The process waits on the exec FIFO until Exec.
		err = l.container.Start(p)
		if err == nil {
			if err = l.beforeRun(); err != nil {
				// The process exists, holding its stdio: end it before
				// the relays are released and the container destroyed.
				kill(p)
			}
		}
		if err == nil && !l.createOnly {
			err = l.container.Exec()
		}
	case l.createOnly:
		err = l.container.Start(p)
	default:
		err = l.container.Run(p)
	}
	if err != nil {
		return -1, err
	}
	if err := l.afterStart(p, streams); err != nil {
		kill(p)
		return -1, err
	}
	if l.detach && l.ready != nil {
		// As `moat start` does, return once moat-init is ready: in the
		// sandbox's netns and relaying signals to the program.
		if err := awaitReady(l.ready); err != nil {
			kill(p)
			return -1, err
		}
	}
	if !l.attached() {
		return 0, nil
	}
	status, err = signals.supervise(p, streams, l.ready)
	if err != nil {
		kill(p)
		return -1, err
	}
	l.destroy()
	return status, nil
}

// checkConsoleOptions enforces runc's rules (and texts) for terminals: a
// detached terminal process needs a console socket to send the pty master
// to, and a console socket is for that case only.
func (l *launch) checkConsoleOptions() error {
	detachedTTY := l.process.Terminal && !l.attached()
	if detachedTTY && l.consoleSocket == "" {
		return errors.New("cannot allocate tty if runc will detach without setting console socket")
	}
	if !detachedTTY && l.consoleSocket != "" {
		return errors.New("cannot use console socket if runc will not detach or allocate tty")
	}
	return nil
}

// passFiles hands the process the socket-activation files (announced in
// LISTEN_FDS) and --preserve-fds more of moat's descriptors after them.
func (l *launch) passFiles(p *libcontainer.Process) error {
	if n := len(l.inherit); n > 0 {
		p.Env = append(p.Env, "LISTEN_FDS="+strconv.Itoa(n), "LISTEN_PID=1")
		p.ExtraFiles = append(p.ExtraFiles, l.inherit...)
	}
	next := 3 + len(p.ExtraFiles)
	for i := range l.preserveFDs {
		fd := next + i
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("--preserve-fds=%d: fd %d is not open: %w", l.preserveFDs, fd, err)
		}
		p.ExtraFiles = append(p.ExtraFiles, os.NewFile(uintptr(fd), "preserved fd "+strconv.Itoa(fd)))
	}
	for _, f := range []*os.File{l.netns, l.ready} {
		if f != nil {
			p.ExtraFiles = append(p.ExtraFiles, f)
		}
	}
	return nil
}

// connectStdio chooses the process's standard streams: a new pty (relayed
// to moat's terminal, or sent to the console socket), moat's own stdio
// (detached), or pipes moat copies (attached).
func (l *launch) connectStdio(p *libcontainer.Process) (*stdio, error) {
	switch {
	case l.process.Terminal && l.attached():
		return relayTerminal(p)
	case l.process.Terminal:
		conn, err := dialForProcess(l.consoleSocket, "console socket", &p.ConsoleSocket)
		if err != nil {
			return nil, err
		}
		return &stdio{childEnds: []io.Closer{conn, p.ConsoleSocket}}, nil
	case !l.attached():
		// The caller gave moat the streams the process is to keep.
		p.Stdin, p.Stdout, p.Stderr = os.Stdin, os.Stdout, os.Stderr
		return &stdio{}, nil
	}
	// The pipes belong to the container's root user, so that the process
	// can reopen them through /proc/self/fd.
	config := l.container.Config()
	uid, err := config.HostRootUID()
	if err != nil {
		return nil, err
	}
	gid, err := config.HostRootGID()
	if err != nil {
		return nil, err
	}
	return relayPipes(p, uid, gid)
}

// afterStart completes what needs the started process: moat's terminal
// relay, closing moat's copies of the process's descriptors and the pid
// file.
func (l *launch) afterStart(p *libcontainer.Process, streams *stdio) error {
	if err := streams.waitTerminal(); err != nil {
		return err
	}
	streams.closeChildEnds()
	if l.pidFile == "" {
		return nil
	}
	pid, err := p.Pid()
	if err != nil {
		return err
	}
	return writePidFile(l.pidFile, pid)
}

// destroy removes the container when this launch owns its lifetime.
func (l *launch) destroy() {
	if !l.destroyOnExit {
		return
	}
	if err := l.container.Destroy(); err != nil {
		logrus.Warnf("remove container %s: %v", l.container.ID(), err)
		return
	}
	if l.onDestroy != nil {
		l.onDestroy()
	}
}

// kill ends a process moat cannot go on with and reaps it.
func kill(p *libcontainer.Process) {
	_ = p.Signal(unix.SIGKILL)
	_, _ = p.Wait()
}

// dialForProcess connects to the caller's unix socket at path and stores
// a descriptor of the connection in *dst for libcontainer to hand to the
// container's init, which sends the caller a console or pidfd over it.
// The returned connection is moat's end.
func dialForProcess(path, what string, dst **os.File) (net.Conn, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	f, err := conn.(*net.UnixConn).File()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	*dst = f
	return conn, nil
}

// writePidFile writes pid to path atomically: to a hidden file beside it
// first, renamed into place.
func writePidFile(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_SYNC, 0o666)
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	_, werr := f.WriteString(strconv.Itoa(pid))
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return os.Rename(tmp, path)
}
