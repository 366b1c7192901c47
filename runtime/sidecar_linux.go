package runtime

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/internal/nsthread"
	"github.com/moatsandbox/moat/sidecar/control"
)

// sidecarReadyTimeout bounds the wait for a starting sidecar.
const sidecarReadyTimeout = 15 * time.Second

// startSidecar starts `moat-sidecar serve` for the sandbox in netDir,
// inside the outer network namespace at outer ("" is moat's own), and
// returns a function that waits until it listens (or has failed): the
// caller creates the container meanwhile and waits before the container's
// process may run. The sidecar holds none of the caller's stdio (an engine
// waiting for EOF on the container's streams never waits on it) and lives
// in its own session; its own log goes to sidecar.log in the sandbox's log
// directory.
func startSidecar(netDir, outer string, sc *control.Config) (wait func() error, retErr error) {
	bin, err := SidecarBinary()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(netDir, control.ConfigFile)
	if err := control.WriteConfig(cfgPath, sc); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(sc.LogDir, 0o750); err != nil {
		return nil, fmt.Errorf("sidecar log directory: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(sc.LogDir, "sidecar.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("sidecar log: %w", err)
	}
	defer logFile.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devNull.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sidecar ready pipe: %w", err)
	}
	defer func() {
		if retErr != nil {
			readyR.Close()
		}
	}()

	cmd := exec.Command(bin, "serve", "--config", cfgPath, "--ready-fd")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, logFile, logFile
	cmd.ExtraFiles = []*os.File{readyW} // fd 3
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	err = startIn(outer, cmd)
	readyW.Close()
	if err != nil {
		return nil, fmt.Errorf("start sidecar: %w", err)
	}
	pid := cmd.Process.Pid
	// The sidecar outlives this process; whoever reaps moat's orphans
	// (the engine's shim, init) reaps it.
	_ = cmd.Process.Release()
	defer func() {
		if retErr != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}()
	if err := os.WriteFile(filepath.Join(netDir, sidecarPIDFile), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return nil, fmt.Errorf("record sidecar pid: %w", err)
	}
	return func() error {
		defer readyR.Close()
		_ = readyR.SetReadDeadline(time.Now().Add(sidecarReadyTimeout))
		line, err := bufio.NewReader(readyR).ReadString('\n')
		line = strings.TrimSpace(line)
		switch {
		case line == "ok":
			return nil
		case line != "":
			return fmt.Errorf("sidecar: %s", line)
		default:
			return fmt.Errorf("sidecar did not start (see %s): %v", filepath.Join(sc.LogDir, "sidecar.log"), err)
		}
	}, nil
}

// startIn starts cmd with its network namespace set to the one at path:
// the fork happens on a thread switched into that namespace
// (internal/nsthread).
func startIn(path string, cmd *exec.Cmd) error {
	if path == "" {
		return cmd.Start()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer target.Close()
	err = nsthread.In(int(target.Fd()), cmd.Start)
	if err != nil && cmd.Process != nil {
		// Started, but the thread could not come back: no sidecar.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if err != nil {
		return fmt.Errorf("start in network namespace %s: %w", path, err)
	}
	return nil
}

// stopSidecar ends the sandbox's sidecar, if it runs: SIGTERM, then
// SIGKILL after a grace period. Idempotent.
func stopSidecar(netDir string) { beginStopSidecar(netDir)() }

// beginStopSidecar sends the sidecar SIGTERM and returns a function that
// waits for it to exit (SIGKILL after a grace period), so the caller can
// tear the network down meanwhile.
func beginStopSidecar(netDir string) (wait func()) {
	pidPath := filepath.Join(netDir, sidecarPIDFile)
	pid, ok := sidecarPID(netDir)
	if !ok {
		_ = os.Remove(pidPath)
		return func() {}
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		_ = os.Remove(pidPath)
		return func() {}
	}
	_ = unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0)
	return func() {
		defer unix.Close(fd)
		if !waitPidfd(fd, 3*time.Second) {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			if !waitPidfd(fd, 3*time.Second) {
				logrus.Warnf("sidecar %d did not exit", pid)
			}
		}
		_ = os.Remove(pidPath)
	}
}

// sidecarPID is the pid of the sandbox's running sidecar: the pid file's
// process, if it still runs this sandbox's configuration.
func sidecarPID(netDir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(netDir, sidecarPIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(netDir, control.ConfigFile)) {
		return 0, false
	}
	return pid, true
}

// waitPidfd waits for the process behind a pidfd to exit, up to d.
func waitPidfd(fd int, d time.Duration) bool {
	ok, err := waitReadable(fd, d)
	return err == nil && ok
}

// SidecarBinary finds moat-sidecar: beside the moat executable, else in
// PATH.
func SidecarBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "moat-sidecar")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("moat-sidecar")
	if err != nil {
		return "", fmt.Errorf("moat-sidecar not found beside moat or in PATH (install both with `make install`): %w", err)
	}
	return filepath.Abs(p)
}
