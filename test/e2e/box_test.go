package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// boxPolicy runs the boxed command as nobody with a writable /tmp only.
const boxPolicy = `version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /bin, /var/tmp]
  read_write: [/tmp]
landlock:
  compatibility: best_effort
process:
  run_as_user: nobody
  run_as_group: nogroup
`

// boxEnv is a private admin config (sandbox on), state directory and
// runtime root for `moat box`.
type boxEnv struct {
	t                           *testing.T
	bin, root, config, stateDir string
	policy                      string
}

func newBoxEnv(t *testing.T) *boxEnv {
	t.Helper()
	fixtures.RequireRoot(t)
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh on this host")
	}
	sandboxBinaries(t)
	dir := t.TempDir()
	e := &boxEnv{t: t, bin: moatRuntimeBinary(t), root: filepath.Join(dir, "root"),
		config: filepath.Join(dir, "config.yaml"), stateDir: filepath.Join(dir, "state"),
		policy: filepath.Join(dir, "policy.yaml")}
	if err := os.WriteFile(e.policy, []byte(boxPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\n", e.stateDir, filepath.Join(dir, "logs"))
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.checkClean)
	return e
}

// box runs `moat box` with stdin from /dev/null and returns stdout,
// stderr and the exit code.
func (e *boxEnv) box(args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"--root", e.root, "--config", e.config, "box"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		e.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// checkClean fails the test when a box left a bundle, sandbox state, a
// container or a mount behind.
func (e *boxEnv) checkClean() {
	t := e.t
	for _, sub := range []string{"box", "sandboxes", "networks"} {
		entries, _ := os.ReadDir(filepath.Join(e.stateDir, sub))
		for _, ent := range entries {
			t.Errorf("left in %s/%s: %s", e.stateDir, sub, ent.Name())
		}
	}
	entries, _ := os.ReadDir(e.root)
	for _, ent := range entries {
		t.Errorf("container state left behind: %s", ent.Name())
		exec.Command(e.bin, "--root", e.root, "--config", e.config, "delete", "-f", ent.Name()).Run()
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, e.stateDir) || strings.Contains(line, e.root) {
			t.Errorf("mount left behind: %s", line)
		}
	}
}

func TestBoxPolicyUserAndTmp(t *testing.T) {
	e := newBoxEnv(t)
	out, errOut, code := e.box("--policy", e.policy, "--", "sh", "-c", "id -un; echo ok > /tmp/x && cat /tmp/x")
	if code != 0 || out != "nobody\nok\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want nobody and ok", code, out, errOut)
	}
}

// hostScratchDir is a directory on the host outside the box's
// read_write paths, writable for nobody, so only the box can stop a write
// into it; removed after the test.
func hostScratchDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "moat-box-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBoxHostReadOnly(t *testing.T) {
	e := newBoxEnv(t)
	target := filepath.Join(hostScratchDir(t), "f")
	out, errOut, code := e.box("--policy", e.policy, "--", "sh", "-c", "echo x > "+target)
	if code == 0 {
		t.Fatalf("write outside read_write succeeded: stdout %q stderr %q", out, errOut)
	}
	if !strings.Contains(errOut, "Read-only file system") && !strings.Contains(errOut, "Permission denied") {
		t.Errorf("stderr %q, want a read-only or permission error", errOut)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s appeared on the host (stat: %v)", target, err)
	}
}

func TestBoxRW(t *testing.T) {
	e := newBoxEnv(t)
	dir := hostScratchDir(t)
	target := filepath.Join(dir, "f")
	out, errOut, code := e.box("--policy", e.policy, "--rw", dir, "--", "sh", "-c", "echo written > "+target)
	if code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	b, err := os.ReadFile(target)
	if err != nil || string(b) != "written\n" {
		t.Errorf("host sees %q, %v; want the box's write", b, err)
	}
}

func TestBoxExitStatus(t *testing.T) {
	e := newBoxEnv(t)
	_, errOut, code := e.box("--policy", e.policy, "--id", "box-exit-test", "--", "sh", "-c", "exit 7")
	if code != 7 {
		t.Fatalf("exit %d, want 7; stderr %q", code, errOut)
	}
}

func TestBoxSandboxOff(t *testing.T) {
	e := newBoxEnv(t)
	if err := os.WriteFile(e.config, []byte("sandbox: off\nstate_dir: "+e.stateDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := e.box("--", "true")
	if code == 0 || !strings.Contains(errOut, "moat box needs the sandbox on") {
		t.Fatalf("exit %d, stderr %q; want a refusal", code, errOut)
	}
}

// TestBoxNetwork: box has the network sandbox: the command's only way out
// is the proxy, which decides by the policy; direct connections are
// refused at once.
func TestBoxNetwork(t *testing.T) {
	e := newBoxEnv(t)
	pol := filepath.Join(t.TempDir(), "net.yaml")
	os.WriteFile(pol, []byte(boxPolicy+`network_policies:
  docs:
    endpoints: [{host: docs.example.test, port: 443}]
    binaries: [{path: /usr/bin/curl}]
`), 0o644)
	// box has a private /tmp; the probe goes where the policy can read it.
	dir, err := os.MkdirTemp("/var/tmp", "moat-e2e-box-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data, err := os.ReadFile(probeBin)
	if err != nil {
		t.Fatal(err)
	}
	sandboxProbe := filepath.Join(dir, "probe")
	if err := os.WriteFile(sandboxProbe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	out, errOut, code := e.box("--policy", pol, "--", "sh", "-c",
		"echo $HTTPS_PROXY; "+sandboxProbe+" connect ${HTTPS_PROXY#http://} other.example.test:443 /; "+sandboxProbe+" dial tcp 192.0.2.1:80")
	if code != 0 || !strings.Contains(out, "http://10.200.") || !strings.Contains(out, "endpoint other.example.test:443 not in policy 'docs'") || !strings.HasSuffix(out, "ECONNREFUSED\n") {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}
}

// TestBoxTwoConfigurations: sandboxes of two moat configurations (two
// state directories, so two allocators) in the host's netns get different
// addresses: the allocator skips addresses already on the host.
func TestBoxTwoConfigurations(t *testing.T) {
	a, b := newBoxEnv(t), newBoxEnv(t)
	pol := filepath.Join(t.TempDir(), "net.yaml")
	os.WriteFile(pol, []byte(boxPolicy+`network_policies:
  docs:
    endpoints: [{host: docs.example.test, port: 443}]
    binaries: [{path: /usr/bin/curl}]
`), 0o644)
	first := make(chan string, 1)
	go func() {
		out, _, _ := a.box("--policy", pol, "--", "sh", "-c", "echo $HTTPS_PROXY; sleep 3")
		first <- out
	}()
	time.Sleep(1500 * time.Millisecond)
	second, errOut, code := b.box("--policy", pol, "--", "sh", "-c", "echo $HTTPS_PROXY")
	firstOut := <-first
	if code != 0 || !strings.HasPrefix(second, "http://10.200.") || strings.TrimSpace(second) == strings.TrimSpace(firstOut) {
		t.Errorf("two configurations: first %q, second %q (exit %d, %s)", firstOut, second, code, errOut)
	}
}
