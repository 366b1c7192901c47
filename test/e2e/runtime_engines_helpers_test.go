package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// requireCommands skips the test unless every command is installed.
func requireCommands(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("skipping: %s not installed (scripts/setup-and-test.sh installs it)", n)
		}
	}
}

// shortTempDir returns a temporary directory with a short path (unix
// socket paths are limited to 108 bytes), removed when the test ends.
func shortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// daemon is a background daemon a test started and must stop.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// startDaemon starts argv with its output in dir/<name>.log, in its own
// process group, and stops it (SIGTERM, then SIGKILL) when the test ends.
// Cleanups registered after this one run before it.
func startDaemon(t *testing.T, dir, name string, argv ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, log: filepath.Join(dir, name+".log"), done: make(chan error, 1)}
	logF, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logF, logF
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		logF.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	logF.Close()
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) stop(t *testing.T) {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s (pid %d) ignored SIGTERM; killing it", d.name, d.cmd.Process.Pid)
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	if t.Failed() || os.Getenv("MOAT_E2E_LOGS") != "" {
		if data, err := os.ReadFile(d.log); err == nil {
			t.Logf("%s log (tail):\n%s", d.name, tail(string(data), 4000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitReady polls probe until it succeeds or the daemon exits.
func (d *daemon) waitReady(t *testing.T, probe func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := probe()
		if err == nil {
			return
		}
		select {
		case werr := <-d.done:
			d.done <- werr
			data, _ := os.ReadFile(d.log)
			t.Fatalf("%s exited (%v) before it was ready:\n%s", d.name, werr, tail(string(data), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s: %v", d.name, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// runCmd runs argv with a timeout and returns combined output and the
// exit code (128+signal when killed).
func runCmd(t *testing.T, timeout time.Duration, argv ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdout, stderr, code := runWithFiles(t, cmd, nil)
	if ctx.Err() != nil {
		t.Fatalf("%s: timed out after %s\n%s%s", strings.Join(argv, " "), timeout, stdout, stderr)
	}
	return stdout + stderr, code
}

// moatWrapper writes a script that runs the seccomp-tagged moat with the
// sandbox-off admin config and logs its argv to dir/moat-argv.log, for
// engines that take a runtime binary but no arguments for it (containerd's
// --runc-binary). It returns the script's path and the argv log's.
func moatWrapper(t *testing.T, dir string) (wrapper, argvLog string) {
	t.Helper()
	bin := moatRuntimeBinary(t)
	cfg, err := fixtures.SandboxOffConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	wrapper = filepath.Join(dir, "moat-wrapper")
	argvLog = filepath.Join(dir, "moat-argv.log")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s --config %s \"$@\"\n", argvLog, bin, cfg)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, argvLog
}

// writeImage writes the busybox OCI archive named ref into dir.
func writeImage(t *testing.T, dir, ref string) string {
	t.Helper()
	rootfs := filepath.Join(dir, "image-rootfs")
	if err := fixtures.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fixtures.OCIArchive(rootfs, ref, f); err != nil {
		t.Fatal(err)
	}
	return p
}

// exitCases are the exit codes every engine must report for a moat
// container: a clean exit, an exit status, and a child killed by SIGKILL
// whose status the shell passes on (128+9).
var exitCases = []struct {
	name string
	args []string
	want int
	out  string
}{
	{"exit 0", []string{"sh", "-c", "echo hello from moat"}, 0, "hello from moat"},
	{"exit 7", []string{"sh", "-c", "exit 7"}, 7, ""},
	{"child killed", []string{"sh", "-c", `sh -c 'kill -9 $$'; exit $?`}, 137, ""},
}
