package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The sandbox tests run containers with the sandbox on: every process
// starts under moat-init, confined by the container's policy.

// sandboxPolicy runs the agent as `sandbox` with OpenShell's baseline plus a
// read-only /data that the sandbox user owns, and no network.
const sandboxPolicy = `version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /data, /bin]
  read_write: [/sandbox, /tmp]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
`

var (
	sandboxBinOnce sync.Once
	sandboxBinErr  error
	probeBin       string
)

// sandboxBinaries builds moat-init and links moat-sidecar beside the
// runtime binary (where moat looks for them), and builds the syscall probe the confinement tests run inside
// containers, both static.
func sandboxBinaries(t *testing.T) {
	t.Helper()
	bin := moatRuntimeBinary(t)
	sandboxBinOnce.Do(func() {
		probeBin = filepath.Join(filepath.Dir(bin), "probe")
		for out, pkg := range map[string]string{
			filepath.Join(filepath.Dir(bin), "moat-init"): "../../cmd/moat-init",
			probeBin: "../../confine/testdata/helper",
		} {
			cmd := exec.Command("go", "build", "-o", out, pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				sandboxBinErr = fmt.Errorf("build %s: %v\n%s", pkg, err, b)
				return
			}
		}
		// moat starts the sidecar from beside itself.
		sandboxBinErr = os.Symlink(filepath.Join(binDir, "moat-sidecar"), filepath.Join(filepath.Dir(bin), "moat-sidecar"))
	})
	if sandboxBinErr != nil {
		t.Fatal(sandboxBinErr)
	}
}

// newSandboxEnv is newMoatEnv with the sandbox on: an admin config whose
// state directory is private to the test and whose default policy is
// policyYAML.
func newSandboxEnv(t *testing.T, policyYAML string) *moatEnv {
	t.Helper()
	e := newMoatEnv(t)
	sandboxBinaries(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(policyYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "moat-state")
	e.config = filepath.Join(dir, "config.yaml")
	e.logDir = filepath.Join(dir, "logs")
	cfg := fmt.Sprintf("sandbox: on\nstate_dir: %s\ndefault_policy: %s\npolicy_dir: %s\nlog_dir: %s\n", stateDir, pol, dir, e.logDir)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.cleanup() // delete leftovers first (cleanups run last-in first-out)
		for _, sub := range []string{"sandboxes", "networks", "index/netns", "index/containers"} {
			entries, _ := os.ReadDir(filepath.Join(stateDir, sub))
			for _, ent := range entries {
				t.Errorf("sandbox state left behind: %s/%s", sub, ent.Name())
			}
		}
		if n := nsMounts(t, stateDir); n != 0 {
			t.Errorf("%d network namespace mounts left under %s", n, stateDir)
		}
	})
	return e
}

// sandboxBundle is a busybox bundle running args, with the probe at
// /usr/bin/probe, a /data directory and a /home/sandbox the sandbox user
// owns, and a world-readable /opt/secret outside every rule.
func sandboxBundle(t *testing.T, args ...string) string {
	t.Helper()
	dir := fixtures.NewBundle(t, args...)
	spec, err := fixtures.ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Root.Readonly = false
	if err := fixtures.WriteSpec(dir, spec); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"data", "sandbox", "opt"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"data", "sandbox", "home/sandbox"} {
		if err := os.Chown(filepath.Join(rootfs, d), fixtures.SandboxUID, fixtures.SandboxUID); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "opt/secret"), []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	probe, err := os.ReadFile(probeBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "usr/bin/probe"), probe, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runSandboxed runs a one-shot sandboxed container and returns its output
// and exit code.
func runSandboxed(t *testing.T, e *moatEnv, script string) (string, string, int) {
	t.Helper()
	bundle := sandboxBundle(t, "sh", "-c", script)
	return e.moat("run", "--bundle", bundle, e.id("sb"))
}

func TestSandboxConfinement(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	tests := []struct {
		name   string
		script string
		want   string
	}{
		{"policy user", "id -un; id -u; echo HOME=$HOME USER=$USER MOAT_SANDBOX=$MOAT_SANDBOX", "sandbox\n1000\nHOME=/home/sandbox USER=sandbox MOAT_SANDBOX=1\n"},
		{"owned but unlisted dir", "touch /home/sandbox/x 2>&1; echo rc=$?", "Permission denied\nrc=1\n"},
		{"owned read_only dir", "touch /data/x 2>&1; echo rc=$?", "Permission denied\nrc=1\n"},
		{"read_write dirs", "touch /tmp/x /sandbox/x && echo ok", "ok\n"},
		{"world-readable file outside the plan", "cat /opt/secret 2>&1; echo rc=$?", "Permission denied\nrc=1\n"},
		{"unshare -U", "unshare -U true 2>&1; echo rc=$?", "Operation not permitted\nrc=1\n"},
		{"AF_PACKET", "probe socket 17 3 0", "EPERM\n"},
		{"ptrace", "probe ptrace", "EPERM\n"},
		{"clone3", "probe clone3", "ENOSYS\n"},
		{"mount", "probe mount /tmp", "EPERM\n"},
		{"AF_INET works", "probe socket 2 1 0", "OK\n"},
		{"memfd works", "probe memfd", "OK\n"},
		{"no privileges", "probe setuid0", "EPERM\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runSandboxed(t, e, tt.script)
			if code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout %q lacks %q (stderr: %s)", stdout, tt.want, stderr)
			}
		})
	}
}

func TestSandboxExitCodes(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	for script, want := range map[string]int{"true": 0, "exit 7": 7, "kill -9 $$": 137} {
		if _, stderr, code := runSandboxed(t, e, script); code != want {
			t.Errorf("%q: exit %d, want %d (stderr: %s)", script, code, want, stderr)
		}
	}
}

// TestSandboxRunDetachedReady: `moat run -d` returns only once moat-init
// relays signals, as `moat start` does, so a signal sent to the pid it
// wrote at once reaches the program. Before, it could reach moat-init
// before its registration (or libcontainer's init), which drops SIGUSR1.
func TestSandboxRunDetachedReady(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	bundle := sandboxBundle(t, "sleep", "60")
	for i := 0; i < 3; i++ {
		id := e.id("detached")
		pidFile := filepath.Join(t.TempDir(), "pid")
		e.mustMoat("run", "-d", "--pid-file", pidFile, "--bundle", bundle, id)
		pid := readPIDFile(t, pidFile)
		// sleep dies of SIGUSR1, and moat-init exits with it.
		if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for e.state(id).Status != "stopped" {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: SIGUSR1 sent to pid %d right after `moat run -d` did not reach the program", i, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.mustMoat("delete", id)
	}
}

// TestSandboxExecAndReaping: an exec'd process passes through moat-init
// with the container's plan, and orphans of a program that execs into
// something that never waits are reaped (runc would leave zombies).
func TestSandboxExecAndReaping(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	id := e.id("exec")
	bundle := sandboxBundle(t, "sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.2 &); done; exec sleep 30")
	e.mustMoat("run", "-d", "--bundle", bundle, id)
	e.waitStatus(id, "running")

	stdout, stderr, code := e.moat("exec", id, "sh", "-c", "id -un; cat /opt/secret 2>&1; probe ptrace")
	if code != 0 || stdout != "sandbox\ncat: can't open '/opt/secret': Permission denied\nEPERM\n" {
		t.Errorf("exec: exit %d\nstdout: %q\nstderr: %s", code, stdout, stderr)
	}
	// The exec'd program is the process moat started, as with runc (its
	// parent is outside the container's PID namespace), not a child of a
	// moat-init that stays beside it: the engine's signals reach it.
	if out, _, code := e.moat("exec", id, "sh", "-c", "echo $PPID"); code != 0 || out != "0\n" {
		t.Errorf("exec'd program's parent pid %q (exit %d), want 0", out, code)
	}
	// The pid an engine gets for an exec'd process is the program's: a
	// SIGKILL to it (ctr task kill --exec-id) ends the program.
	pidFile := filepath.Join(t.TempDir(), "exec.pid")
	e.mustMoat("exec", "-d", "--pid-file", pidFile, id, "sleep", "123")
	pid := readPIDFile(t, pidFile)
	for i := 0; i < 50 && !strings.Contains(e.mustMoat("ps", id), "sleep 123"); i++ {
		sleepBriefly() // until the program runs
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50 && strings.Contains(e.mustMoat("ps", id), "sleep 123"); i++ {
		sleepBriefly()
	}
	if ps := e.mustMoat("ps", id); strings.Contains(ps, "sleep 123") {
		t.Errorf("the exec'd program outlived a SIGKILL to its pid %d:\n%s", pid, ps)
	}
	// The orphans exit after 0.2 s; poll until none is left as a zombie.
	var zombies string
	for i := 0; i < 50; i++ {
		zombies, _, _ = e.moat("exec", id, "sh", "-c", "ps -o stat,comm | grep -c '^Z' || true")
		if strings.TrimSpace(zombies) == "0" {
			break
		}
		sleepBriefly()
	}
	if strings.TrimSpace(zombies) != "0" {
		t.Errorf("zombies left in the sandbox: %q", zombies)
	}
	e.mustMoat("delete", "--force", id)
}

// TestSandboxRefusals: what cannot be confined fails create with a precise
// message and leaves nothing behind.
func TestSandboxRefusals(t *testing.T) {
	tests := []struct {
		name, policy, want string
	}{
		{"user missing from the image", strings.Replace(sandboxPolicy, "run_as_user: sandbox", "run_as_user: agent", 1),
			"not found in the container's /etc/passwd"},
		{"invalid policy", "version: 1\nnetwork_policies:\n  a:\n    endpoints: [{host: '*', port: 443}]\n",
			"matches every host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSandboxEnv(t, tt.policy)
			id := e.id("refuse")
			bundle := sandboxBundle(t, "true")
			_, stderr, code := e.moat("create", "--bundle", bundle, id)
			if code == 0 {
				t.Fatal("create succeeded")
			}
			if stderr = strings.ReplaceAll(stderr, `\"`, `"`); !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q lacks %q", stderr, tt.want)
			}
			if _, err := os.Stat(filepath.Join(e.root, id)); !os.IsNotExist(err) {
				t.Errorf("state dir left behind: %v", err)
			}
			assertNoCgroup(t, id)
		})
	}
}

func sleepBriefly() { time.Sleep(100 * time.Millisecond) }

// readPIDFile returns the pid a --pid-file holds.
func readPIDFile(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || perr != nil {
		t.Fatalf("pid file %s: %q, %v, %v", path, data, err, perr)
	}
	return pid
}

// TestSandboxWithoutInit: with the sandbox on and no moat-init beside moat
// or in PATH, create fails closed and leaves nothing behind.
func TestSandboxWithoutInit(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	lone := filepath.Join(t.TempDir(), "moat")
	data, err := os.ReadFile(e.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	e.bin = lone
	id := e.id("noinit")
	_, stderr, code := e.moat("create", "--bundle", sandboxBundle(t, "true"), id)
	if code == 0 || !strings.Contains(stderr, "moat-init not found beside moat or in PATH") {
		t.Errorf("create: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(e.root, id)); !os.IsNotExist(err) {
		t.Errorf("state dir left behind: %v", err)
	}
}

// TestSandboxLandlockModes: a missing policy path is skipped with a finding
// under best_effort, and stops the start under hard_requirement before the
// program runs.
func TestSandboxLandlockModes(t *testing.T) {
	missing := strings.Replace(sandboxPolicy, "/data, /bin]", "/data, /bin, /nonexistent]", 1)
	e := newSandboxEnv(t, missing)
	stdout, stderr, code := runSandboxed(t, e, "echo ran")
	if code != 0 || stdout != "ran\n" || !strings.Contains(stderr, "/nonexistent") {
		t.Errorf("best_effort: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	hard := newSandboxEnv(t, strings.Replace(missing, "best_effort", "hard_requirement", 1))
	stdout, stderr, code = runSandboxed(t, hard, "echo ran")
	if code == 0 || strings.Contains(stdout, "ran") || !strings.Contains(stderr, "moat-init: ") {
		t.Errorf("hard_requirement: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
