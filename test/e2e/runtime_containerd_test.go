package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

const busyboxRef = "docker.io/library/moat-busybox:latest"

// containerdEnv is a private containerd 1.6 (Debian's package) with its
// own root, state and sockets, and the CRI plugin disabled unless a test
// configures it.
type containerdEnv struct {
	sock string
	ns   string
}

func startContainerd(t *testing.T, dir string) *containerdEnv {
	t.Helper()
	return startContainerdWith(t, dir, "moat-e2e", "")
}

// startContainerdWith starts the private containerd with ctr's namespace
// ns and criTOML as its configuration's CRI plugin section ("": the CRI
// plugin disabled).
func startContainerdWith(t *testing.T, dir, ns, criTOML string) *containerdEnv {
	t.Helper()
	c := &containerdEnv{sock: filepath.Join(dir, "ctrd.sock"), ns: ns}
	config := filepath.Join(dir, "containerd.toml")
	disabled := `"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs"`
	if criTOML == "" {
		disabled = `"io.containerd.grpc.v1.cri", ` + disabled
	}
	toml := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), disabled, c.sock, c.sock+".ttrpc") + criTOML
	if err := os.WriteFile(config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	// The runc shim keeps the runtime's --root under /run/containerd/runc
	// whatever containerd's own state dir; remove the namespace's (empty)
	// directory once containerd has stopped, unless it was there before.
	runcRoot := filepath.Join("/run/containerd/runc", c.ns)
	if _, err := os.Stat(runcRoot); os.IsNotExist(err) {
		t.Cleanup(func() { _ = os.Remove(runcRoot) })
	}
	d := startDaemon(t, dir, "containerd", "containerd", "--config", config)
	d.waitReady(t, func() error {
		if out, code := runCmd(t, 10*time.Second, "ctr", "-a", c.sock, "version"); code != 0 {
			return fmt.Errorf("ctr version: %s", out)
		}
		return nil
	})
	// Runs before containerd stops: remove whatever tasks and containers
	// a failed test left.
	t.Cleanup(func() { c.removeAll(t) })
	return c
}

func (c *containerdEnv) ctr(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runCmd(t, 2*time.Minute, append([]string{"ctr", "-a", c.sock, "-n", c.ns}, args...)...)
}

func (c *containerdEnv) removeAll(t *testing.T) {
	out, _ := c.ctr(t, "containers", "ls", "-q")
	for _, id := range strings.Fields(out) {
		c.ctr(t, "task", "kill", "-s", "SIGKILL", id)
		c.ctr(t, "task", "rm", "-f", id)
		if out, code := c.ctr(t, "containers", "rm", id); code != 0 {
			t.Errorf("cleanup: ctr containers rm %s: %s", id, out)
		}
	}
	c.ctr(t, "images", "rm", busyboxRef)
}

// TestContainerdRunsMoat: containerd 1.6's runc shim drives moat as its
// runc binary; ctr sees the container's exit codes.
func TestContainerdRunsMoat(t *testing.T) {
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	requireCommands(t, "containerd", "ctr", "containerd-shim-runc-v2")
	dir := shortTempDir(t, "moat-ctrd-")
	wrapper, argvLog := moatWrapper(t, dir)
	c := startContainerd(t, dir)
	if out, code := c.ctr(t, "image", "import", writeImage(t, dir, busyboxRef)); code != 0 || !strings.Contains(out, busyboxRef) {
		t.Fatalf("image import: exit %d\n%s", code, out)
	}
	run := func(id string, args ...string) []string {
		return append([]string{"run", "--rm", "--runc-binary", wrapper, busyboxRef, id}, args...)
	}

	for _, tt := range exitCases {
		t.Run(tt.name, func(t *testing.T) {
			out, code := c.ctr(t, run(fmt.Sprintf("moat-ctr-%d", time.Now().UnixNano()), tt.args...)...)
			if code != tt.want || !strings.Contains(out, tt.out) {
				t.Errorf("ctr run: exit %d, want %d; output %q", code, tt.want, out)
			}
		})
	}

	t.Run("SIGKILL from ctr", func(t *testing.T) {
		id := fmt.Sprintf("moat-ctr-kill-%d", time.Now().UnixNano())
		done := make(chan int, 1)
		go func() {
			_, code := runCmd(t, 2*time.Minute, append([]string{"ctr", "-a", c.sock, "-n", c.ns}, run(id, "sleep", "300")...)...)
			done <- code
		}()
		deadline := time.Now().Add(time.Minute)
		for {
			out, _ := c.ctr(t, "task", "ls")
			if strings.Contains(out, id) && strings.Contains(out, "RUNNING") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s never ran:\n%s", id, out)
			}
			time.Sleep(25 * time.Millisecond)
		}
		if out, code := c.ctr(t, "task", "kill", "-s", "SIGKILL", id); code != 0 {
			t.Fatalf("task kill: %s", out)
		}
		select {
		case code := <-done:
			if code != 137 {
				t.Errorf("ctr run exit %d, want 137", code)
			}
		case <-time.After(time.Minute):
			t.Fatal("ctr run did not return")
		}
	})

	// The sandbox on, through containerd's runc shim: moat-init confines
	// the task (policy user, Landlock) in run and in `ctr task exec` alike,
	// and delete leaves no sandbox state.
	t.Run("sandbox", func(t *testing.T) {
		sbDir := filepath.Join(dir, "sandbox")
		os.MkdirAll(sbDir, 0o755)
		sbPolicy := filepath.Join(sbDir, "policy.yaml")
		if err := os.WriteFile(sbPolicy, []byte(sandboxPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(sbDir, "state")
		sbConfig := filepath.Join(sbDir, "config.yaml")
		if err := os.WriteFile(sbConfig, []byte(fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\n", state, filepath.Join(sbDir, "logs"))), 0o644); err != nil {
			t.Fatal(err)
		}
		sandboxBinaries(t)
		sbWrapper := filepath.Join(sbDir, "moat")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --config %s --policy %s \"$@\"\n", moatRuntimeBinary(t), sbConfig, sbPolicy)
		if err := os.WriteFile(sbWrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		out, code := c.ctr(t, "run", "--rm", "--runc-binary", sbWrapper, busyboxRef, fmt.Sprintf("moat-ctr-sb-%d", time.Now().UnixNano()),
			"sh", "-c", "id -un; touch /home/sandbox/x 2>&1; cat /proc/net/dev | grep -c ':'; exit 3")
		if code != 3 || !strings.Contains(out, "sandbox\n") || !strings.Contains(out, "Permission denied") || !strings.Contains(out, "\n1\n") {
			t.Errorf("ctr run (sandbox): exit %d, %q", code, out)
		}
		id := fmt.Sprintf("moat-ctr-sbx-%d", time.Now().UnixNano())
		if out, code := c.ctr(t, "run", "-d", "--runc-binary", sbWrapper, busyboxRef, id, "sleep", "300"); code != 0 {
			t.Fatalf("ctr run -d: %s", out)
		}
		out, code = c.ctr(t, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "id -un; cat /opt/none 2>&1; exit 4")
		if code != 4 || !strings.Contains(out, "sandbox") {
			t.Errorf("ctr task exec (sandbox): exit %d, %q", code, out)
		}
		c.ctr(t, "task", "kill", "-s", "SIGKILL", id)
		for i := 0; i < 100; i++ {
			if out, _ := c.ctr(t, "task", "ls"); !strings.Contains(out, id) || strings.Contains(out, id+" ") && strings.Contains(out, "STOPPED") {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.ctr(t, "task", "rm", "-f", id)
		if out, code := c.ctr(t, "container", "rm", id); code != 0 {
			t.Errorf("ctr container rm: %s", out)
		}
		for _, sub := range []string{"sandboxes", "networks"} {
			if entries, _ := os.ReadDir(filepath.Join(state, sub)); len(entries) != 0 {
				t.Errorf("%s left after ctr rm: %d entries", sub, len(entries))
			}
		}
	})

	// The shim really ran moat, the way it runs runc.
	argv, err := os.ReadFile(argvLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--log-format json create --bundle", "start moat-ctr-", "delete moat-ctr-"} {
		if !strings.Contains(string(argv), want) {
			t.Errorf("moat argv log lacks %q:\n%s", want, argv)
		}
	}
}
