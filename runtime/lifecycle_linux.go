package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// load opens container id under the root. libcontainer's errors are
// returned as they are: engines match on their texts ("container does not
// exist").
func (r *Runtime) load(id string) (*libcontainer.Container, error) {
	if id == "" {
		return nil, ErrEmptyID
	}
	return libcontainer.Load(r.Root, id)
}

// Start lets a created container's process run its program.
func (r *Runtime) Start(id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	status, err := c.Status()
	if err != nil {
		return err
	}
	if status == libcontainer.Created {
		return r.startCreated(c, id)
	}
	if refusal, ok := startRefusals[status]; ok {
		return errors.New(refusal)
	}
	return fmt.Errorf("cannot start a container in the %s state", status)
}

// startCreated lets a created container's process run. A sandboxed
// container's start returns only once moat-init is in the sandbox's
// network namespace, so poststart hooks and anything reading
// /proc/PID/ns/net see the final state, and (reap mode) relays signals, so
// a `moat kill` that follows reaches the program.
func (r *Runtime) startCreated(c *libcontainer.Container, id string) error {
	var ready *os.File
	if cfg, err := r.adminConfig(); err == nil && cfg.Sandbox {
		ready = openReady(cfg, r.Root, id)
	}
	if ready == nil {
		return c.Exec()
	}
	defer ready.Close()
	if err := c.Exec(); err != nil {
		return err
	}
	return waitReady(ready)
}

// startRefusals are runc's texts for starting a container that has
// started already.
var startRefusals = map[libcontainer.Status]string{
	libcontainer.Running: "cannot start an already running container",
	libcontainer.Stopped: "cannot start a container that has stopped",
}

// Kill sends a signal (default SIGTERM) to the container's first process.
// all is runc's obsolete --all, kept for callers that still pass it: it
// only makes signalling a stopped container succeed, since libcontainer
// already signals every process of a container without its own pid
// namespace.
func (r *Runtime) Kill(id, signal string, all bool) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	if signal == "" {
		signal = "SIGTERM"
	}
	sig, err := ParseSignal(signal)
	if err != nil {
		return err
	}
	err = c.Signal(sig)
	if all && errors.Is(err, libcontainer.ErrNotRunning) {
		return nil
	}
	return err
}

// ParseSignal reads a signal number or name; names may omit "SIG" and
// are case-insensitive.
func ParseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return -1, fmt.Errorf("unknown signal %q", s)
}

// Delete removes a container and everything it holds (processes, cgroups,
// state). Without force the container must be stopped, or created and
// never started.
func (r *Runtime) Delete(id string, force bool) error {
	err := r.delete(id, force)
	// A failing poststop hook fails the delete of a container that is
	// gone all the same: its sandbox goes with it.
	if _, statErr := os.Lstat(filepath.Join(r.Root, id)); err == nil || errors.Is(err, libcontainer.ErrNotExist) || errors.Is(statErr, os.ErrNotExist) {
		r.forgetSandbox(id)
	}
	return err
}

func (r *Runtime) delete(id string, force bool) error {
	c, err := r.load(id)
	if err != nil {
		return r.deleteLeftovers(id, force, err)
	}
	// Forced, even a stopped container is killed: without a pid
	// namespace of its own, processes may be left in its cgroup.
	if force {
		return killAndDestroy(c)
	}
	status, err := c.Status()
	if err != nil {
		return err
	}
	if status == libcontainer.Stopped {
		return c.Destroy()
	}
	if status == libcontainer.Created {
		return killAndDestroy(c)
	}
	return fmt.Errorf("cannot delete container %s that is not stopped: %s", id, status)
}

// deleteLeftovers handles a container libcontainer cannot load (loadErr):
// a create that failed early can leave a state directory without
// state.json, which is removed. A forced delete of a container that does
// not exist succeeds.
func (r *Runtime) deleteLeftovers(id string, force bool, loadErr error) error {
	if !errors.Is(loadErr, libcontainer.ErrNotExist) || id == "" || filepath.Base(id) != id {
		return loadErr
	}
	dir := filepath.Join(r.Root, id)
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "remove %s: %v\n", dir, err)
	}
	if force {
		return nil
	}
	return loadErr
}

// killWait bounds how long killAndDestroy waits for the first process.
const killWait = 10 * time.Second

// killAndDestroy SIGKILLs the container's processes and destroys it once
// its first process is gone, waiting up to killWait. It waits on a pidfd of
// the first process, not by polling: runc polls every 100 ms, and its
// first look comes only after one such sleep.
func killAndDestroy(c *libcontainer.Container) error {
	pidfd := initPidfd(c)
	_ = c.Signal(unix.SIGKILL)
	if pidfd >= 0 {
		defer unix.Close(pidfd)
		if !waitPidfd(pidfd, killWait) {
			return errors.New("container init still running")
		}
		return c.Destroy()
	}
	// No pidfd (an old kernel, or the process is gone already): look at
	// once, then every killPoll.
	const killPoll = 10 * time.Millisecond
	for deadline := time.Now().Add(killWait); time.Now().Before(deadline); time.Sleep(killPoll) {
		// Signal 0 fails once there is no process left to signal.
		if c.Signal(unix.Signal(0)) != nil {
			return c.Destroy()
		}
	}
	return errors.New("container init still running")
}

// initPidfd opens a pidfd of the container's first process, or returns -1
// when it cannot, or when the process is gone already (then there is
// nothing to wait for either). The pidfd is checked to be the container's:
// once it is open, the pid cannot be reused, and libcontainer's signal
// check (pid and start time) then proves it is the first process.
func initPidfd(c *libcontainer.Container) int {
	st, err := c.State()
	if err != nil || st.InitProcessPid <= 0 {
		return -1
	}
	fd, err := unix.PidfdOpen(st.InitProcessPid, 0)
	if err != nil {
		return -1
	}
	if c.Signal(unix.Signal(0)) != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// Pause freezes every process of the container.
func (r *Runtime) Pause(id string) error {
	return r.freezer(id, "pause", (*libcontainer.Container).Pause)
}

// Resume thaws a paused container.
func (r *Runtime) Resume(id string) error {
	return r.freezer(id, "resume", (*libcontainer.Container).Resume)
}

func (r *Runtime) freezer(id, op string, fn func(*libcontainer.Container) error) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	err = fn(c)
	warnCgroupAccess(op, err)
	return err
}

// warnCgroupAccess explains a permission error from the cgroup
// filesystem, the usual failure of rootless moat.
func warnCgroupAccess(op string, err error) {
	if errors.Is(err, fs.ErrPermission) {
		logrus.Warnf("moat %s: permission denied; moat may not have full access to the container's cgroups", op)
	}
}
