package runtime

import (
	"os"
	"os/signal"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/system"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// signalQueue is generous so that a burst of signals is not dropped while
// moat is busy reaping.
const signalQueue = 2048

// caughtSignals are the signals moat receives while it launches and
// supervises a process.
type caughtSignals struct {
	ch chan os.Signal
	// all is closed once every signal is being caught.
	all chan struct{}
}

// catchSignals starts catching signals; with subreaper, moat also becomes
// the reaper of orphaned descendants, as it must be before the process
// exists.
func catchSignals(subreaper bool) *caughtSignals {
	if subreaper {
		if err := system.SetSubreaper(1); err != nil {
			logrus.Warnf("become a subreaper: %v", err)
		}
	}
	s := &caughtSignals{ch: make(chan os.Signal, signalQueue), all: make(chan struct{})}
	// SIGCHLD cannot wait; catching all of the ~65 signals is slow, so the
	// rest are caught while the process is being set up.
	signal.Notify(s.ch, unix.SIGCHLD)
	go func() {
		signal.Notify(s.ch)
		close(s.all)
	}()
	return s
}

// supervise relays signals to the process, keeps its pty the size of
// moat's terminal and reaps moat's children until the process exits, and
// returns its exit status (128+n when signal n killed it). ready, when
// set, is the sandbox's readiness FIFO: signals wait until moat-init has
// written to it, which it does once it relays signals itself (before, the
// Go runtime's defaults would handle them in moat-init).
func (s *caughtSignals) supervise(p *libcontainer.Process, streams *stdio, ready *os.File) (int, error) {
	<-s.all
	pid, err := p.Pid()
	if err != nil {
		return -1, err
	}
	// The terminal may be gone already (SIGHUP races); resize errors do
	// not matter.
	streams.resize()
	unready := readiness(ready)
	var held []os.Signal
	for {
		var sig os.Signal
		select {
		case <-unready:
			unready = nil
			for _, sig := range held {
				relay(p, pid, sig)
			}
			held = nil
			continue
		case sig = <-s.ch:
		}
		switch sig {
		case unix.SIGCHLD:
			if status, exited := reapChildren(pid); exited {
				// Wait lets libcontainer finish with the process, stdio
				// copies included.
				_, _ = p.Wait()
				return status, nil
			}
		case unix.SIGWINCH:
			streams.resize()
		case unix.SIGURG:
			// Go's scheduler preempts goroutines with SIGURG; it is not
			// meant for the container.
		default:
			if unready != nil {
				held = append(held, sig)
				continue
			}
			relay(p, pid, sig)
		}
	}
}

// readiness returns a channel closed once moat-init is ready, has exited
// or readyTimeout passed (awaitReady; the signals go on either way); nil,
// nothing to wait for, when f is nil.
func readiness(f *os.File) <-chan struct{} {
	if f == nil {
		return nil
	}
	ch := make(chan struct{})
	go func() {
		_ = awaitReady(f)
		close(ch)
	}()
	return ch
}

func relay(p *libcontainer.Process, pid int, sig os.Signal) {
	logrus.Debugf("relaying %v to pid %d", sig, pid)
	if err := p.Signal(sig); err != nil {
		logrus.Errorf("relay %v to pid %d: %v", sig, pid, err)
	}
}

// reapChildren collects every child of moat that has exited (the
// process's orphans come to moat, its subreaper) and reports whether pid
// was one of them, with its exit status.
func reapChildren(pid int) (status int, exited bool) {
	for {
		var ws unix.WaitStatus
		child, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil {
			if err != unix.ECHILD {
				logrus.Errorf("reap children: %v", err)
			}
			return status, exited
		}
		if child <= 0 {
			return status, exited
		}
		code := utils.ExitStatus(ws)
		logrus.WithFields(logrus.Fields{"pid": child, "status": code}).Debug("child exited")
		if child == pid {
			status, exited = code, true
		}
	}
}
