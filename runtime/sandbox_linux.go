package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moatsandbox/moat/hooks"
	"github.com/moatsandbox/moat/policy"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// forgetSandbox removes a deleted container's sandbox state, if it had any.
// It never fails the delete: an unreadable admin config only leaves the
// state behind, with a warning.
func (r *Runtime) forgetSandbox(id string) {
	cfg, err := r.adminConfig()
	if err != nil {
		logrus.Warnf("sandbox state of %s not removed: %v", id, err)
		return
	}
	if err := removeSandbox(cfg, r.Root, id); err != nil {
		logrus.Warn(err)
	}
}

// openInnerNetNS opens the inner network namespace of a sandboxed
// container, for an exec'd process's moat-init to join: exec'd processes
// land there even when the spec has no network namespace entry (host
// networking), which libcontainer alone would not join.
func openInnerNetNS(cfg *policy.Config, root, id string) (*os.File, error) {
	netDir, err := os.ReadFile(filepath.Join(sandboxDir(cfg, root, id), networkLink))
	if err != nil {
		return nil, fmt.Errorf("container %s: its network sandbox is unknown: %w", id, err)
	}
	f, err := os.Open(filepath.Join(string(netDir), hooks.InnerNetNSFile))
	if err != nil {
		return nil, fmt.Errorf("container %s: open its network sandbox: %w", id, err)
	}
	return f, nil
}

// sandboxExec makes p, a process exec'd into a sandboxed container, start
// under moat-init with the container's plan: moat-init runs as root with
// the container's init capabilities and drops to the plan's identity,
// capabilities, Landlock rules and seccomp filters itself, so an exec'd
// process is confined exactly as the container's first process is. A user
// or capabilities asked for by the exec are superseded by the plan.
func sandboxExec(c *libcontainer.Container, p *specs.Process) {
	p.Args = sandboxExecArgs(p.Args)
	p.User = specs.User{UID: 0, GID: 0}
	p.NoNewPrivileges = false
	p.Capabilities = specCaps(c.Config().Capabilities)
}

func specCaps(c *configs.Capabilities) *specs.LinuxCapabilities {
	if c == nil {
		return nil
	}
	return &specs.LinuxCapabilities{
		Bounding:    c.Bounding,
		Effective:   c.Effective,
		Permitted:   c.Permitted,
		Inheritable: c.Inheritable,
		Ambient:     c.Ambient,
	}
}

// DecisionLogDir is where container id's decision log is kept: it outlives
// the container, so `moat denials` works after a delete too.
func (r *Runtime) DecisionLogDir(id string) (string, error) {
	cfg, err := r.adminConfig()
	if err != nil {
		return "", err
	}
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("invalid container id %q", id)
	}
	dir := filepath.Join(cfg.LogDir, id)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("container %s has no network sandbox and no decision log under %s", id, cfg.LogDir)
	}
	return dir, nil
}

// readyFIFO, in a container's sandbox directory, is the FIFO moat-init
// signals once it is in the sandbox's network namespace and, in reap mode,
// relays signals to the program (confine.Plan.Ready).
const readyFIFO = "ready"

// readyTimeout bounds how long `moat start` and `moat run -d` wait for
// that signal.
const readyTimeout = 10 * time.Second

// makeReadyFIFO makes the readiness FIFO and opens it read-write (an open
// that does not block without a reader) for the container's init to
// inherit; it returns the file and its inode for the plan.
func makeReadyFIFO(dir string) (*os.File, uint64, error) {
	p := filepath.Join(dir, readyFIFO)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		return nil, 0, fmt.Errorf("readiness fifo: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("readiness fifo: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("readiness fifo: %w", err)
	}
	return f, st.Ino, nil
}

// openReady opens the read end of a sandboxed container's readiness FIFO
// before `moat start` lets the init run; nil when the container has none.
func openReady(cfg *policy.Config, root, id string) *os.File {
	f, err := os.OpenFile(filepath.Join(sandboxDir(cfg, root, id), readyFIFO), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	return f
}

// waitReady waits until moat-init has signalled readiness, or has exited
// (every writer gone), or the timeout passes.
func waitReady(f *os.File) error {
	ok, err := waitReadable(int(f.Fd()), readyTimeout)
	switch {
	case err != nil:
		return fmt.Errorf("wait for the sandbox: %w", err)
	case !ok:
		return fmt.Errorf("the container's init did not get ready (network sandbox, signal relay) within %v", readyTimeout)
	}
	return nil
}

// awaitReady is waitReady for the readiness FIFO f that moat made and
// still holds read-write (`moat run --detach`): it waits on a read-only end
// of its own and closes f, so that moat-init's exit before the byte (its
// end, the last writer, gone) ends the wait as it does for `moat start`.
func awaitReady(f *os.File) error {
	r, err := os.OpenFile(f.Name(), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("wait for the sandbox: %w", err)
	}
	defer r.Close()
	f.Close()
	return waitReady(r)
}

// waitReadable waits until fd is readable (POLLIN; a pidfd is when its
// process has exited), and reports false when d passed first. A signal
// does not restart the wait: it goes on for what is left of d.
func waitReadable(fd int, d time.Duration) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		n, err := unix.Poll(fds, int(max(time.Until(deadline), 0)/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n > 0, err
	}
}
