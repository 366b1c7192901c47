package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// longRunning waits for a SIGTERM (exit 3) for up to five minutes.
var longRunning = []string{"sh", "-c", `trap "exit 3" TERM; sleep 300 & wait`}

// TestRuntimeLifecycle drives one container through every state and the
// commands that work on a running container.
func TestRuntimeLifecycle(t *testing.T) {
	e := newMoatEnv(t)
	bundle := fixtures.NewBundle(t, longRunning...)
	id := e.id("life")
	pidFile := filepath.Join(t.TempDir(), "init.pid")

	e.mustMoat("create", "--bundle", bundle, "--pid-file", pidFile, id)
	s := e.state(id)
	if s.Status != "created" || s.ID != id || s.Bundle != bundle || s.Pid <= 0 || s.OCIVersion != specs.Version {
		t.Fatalf("after create: %+v", s)
	}
	if data, err := os.ReadFile(pidFile); err != nil || string(data) != strconv.Itoa(s.Pid) {
		t.Errorf("pid file = %q, %v; want %d", data, err, s.Pid)
	}
	if _, stderr, code := e.moat("create", "--bundle", bundle, id); code != 1 || !strings.Contains(stderr, "container with given ID already exists") {
		t.Errorf("second create: exit %d, stderr %q", code, stderr)
	}

	e.mustMoat("start", id)
	s = e.state(id)
	if s.Status != "running" {
		t.Fatalf("after start: %+v", s)
	}
	if _, stderr, code := e.moat("start", id); code != 1 || !strings.Contains(stderr, "cannot start an already running container") {
		t.Errorf("second start: exit %d, stderr %q", code, stderr)
	}

	t.Run("exec", func(t *testing.T) {
		stdout, stderr, code := e.moat("exec", id, "sh", "-c", "echo out; echo err >&2; exit 3")
		if code != 3 || stdout != "out\n" || stderr != "err\n" {
			t.Errorf("exec: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		stdout = e.mustMoat("exec", "--user", "1000:1000", "--cwd", "/tmp", "--env", "FOO=bar", id, "sh", "-c", `echo "$(id -u):$(id -g) $(pwd) $FOO"`)
		if stdout != "1000:1000 /tmp bar\n" {
			t.Errorf("exec --user --cwd --env: %q", stdout)
		}
		stdout, _, _ = e.moatStdin(strings.NewReader("piped stdin\n"), "exec", id, "cat")
		if stdout != "piped stdin\n" {
			t.Errorf("exec stdin: %q", stdout)
		}
		if _, stderr, code := e.moat("exec", id, "/nonexistent"); code != 255 || !strings.Contains(stderr, "exec failed") {
			t.Errorf("exec of a missing binary: exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("ps", func(t *testing.T) {
		var pids []int
		if err := json.Unmarshal([]byte(e.mustMoat("ps", "--format", "json", id)), &pids); err != nil {
			t.Fatal(err)
		}
		if !contains(pids, s.Pid) || len(pids) < 2 {
			t.Errorf("ps pids %v lack init %d and its sleep", pids, s.Pid)
		}
		table := e.mustMoat("ps", id)
		if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) < 3 || !strings.Contains(lines[0], "PID") || !strings.Contains(table, "sleep 300") {
			t.Errorf("ps table:\n%s", table)
		}
	})

	t.Run("list", func(t *testing.T) {
		if out := e.mustMoat("list", "-q"); strings.TrimSpace(out) != id {
			t.Errorf("list -q = %q", out)
		}
		table := e.mustMoat("list")
		if !strings.HasPrefix(table, "ID ") || !strings.Contains(table, id) || !strings.Contains(table, "running") {
			t.Errorf("list:\n%s", table)
		}
		var list []containerState
		if err := json.Unmarshal([]byte(e.mustMoat("list", "--format", "json")), &list); err != nil || len(list) != 1 || list[0].ID != id || list[0].Status != "running" {
			t.Errorf("list --format json = %+v, %v", list, err)
		}
	})

	t.Run("pause resume", func(t *testing.T) {
		e.mustMoat("pause", id)
		if st := e.state(id).Status; st != "paused" {
			t.Errorf("after pause: %s", st)
		}
		if _, stderr, code := e.moat("exec", id, "true"); code != 255 || !strings.Contains(stderr, "cannot exec in a paused container") {
			t.Errorf("exec while paused: exit %d, stderr %q", code, stderr)
		}
		e.mustMoat("resume", id)
		if st := e.state(id).Status; st != "running" {
			t.Errorf("after resume: %s", st)
		}
		if _, stderr, code := e.moat("resume", id); code != 1 || !strings.Contains(stderr, "container not paused") {
			t.Errorf("second resume: exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("update and events", func(t *testing.T) {
		e.mustMoat("update", "--pids-limit", "50", id)
		res := filepath.Join(t.TempDir(), "resources.json")
		if err := os.WriteFile(res, []byte(`{"memory":{"limit":67108864}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		e.mustMoat("update", "-r", res, id)
		out := e.mustMoat("events", "--stats", id)
		var ev struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			Data struct {
				Pids struct {
					Current uint64 `json:"current"`
					Limit   uint64 `json:"limit"`
				} `json:"pids"`
				Memory struct {
					Usage struct {
						Limit uint64 `json:"limit"`
					} `json:"usage"`
				} `json:"memory"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(out), &ev); err != nil {
			t.Fatalf("events --stats: %v\n%s", err, out)
		}
		if ev.Type != "stats" || ev.ID != id || ev.Data.Pids.Current < 2 || ev.Data.Pids.Limit != 50 || ev.Data.Memory.Usage.Limit != 64<<20 {
			t.Errorf("events --stats = %+v", ev)
		}
	})

	if _, stderr, code := e.moat("delete", id); code != 1 || !strings.Contains(stderr, "cannot delete container "+id+" that is not stopped: running") {
		t.Errorf("delete of a running container: exit %d, stderr %q", code, stderr)
	}
	e.mustMoat("kill", id, "TERM")
	s = e.waitStatus(id, "stopped")
	if s.Pid != 0 {
		t.Errorf("stopped container has pid %d", s.Pid)
	}
	if _, stderr, code := e.moat("kill", id, "KILL"); code != 1 || !strings.Contains(stderr, "container not running") {
		t.Errorf("kill of a stopped container: exit %d, stderr %q", code, stderr)
	}
	if _, _, code := e.moat("kill", "--all", id, "KILL"); code != 0 {
		t.Errorf("kill --all of a stopped container: exit %d, want 0", code)
	}
	e.mustMoat("delete", id)
	if _, stderr, code := e.moat("state", id); code != 1 || !strings.Contains(stderr, "container does not exist") {
		t.Errorf("state after delete: exit %d, stderr %q", code, stderr)
	}
	assertNoCgroup(t, id)
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestRuntimeKillSignals: kill takes names with and without SIG and
// numbers.
func TestRuntimeKillSignals(t *testing.T) {
	e := newMoatEnv(t)
	bundle := fixtures.NewBundle(t, "sh", "-c", `trap "exit 10" USR1; trap "exit 12" USR2; sleep 300 & wait`)
	for _, sig := range []struct {
		arg  string
		want int
	}{{"SIGUSR1", 10}, {"usr2", 12}, {"10", 10}} {
		id := e.id("sig")
		// Run attached in the background to see the exit status.
		done := make(chan int, 1)
		go func() {
			_, _, code := e.moat("run", "--bundle", bundle, id)
			done <- code
		}()
		e.waitStatus(id, "running")
		e.mustMoat("kill", id, sig.arg)
		select {
		case code := <-done:
			if code != sig.want {
				t.Errorf("kill %s: run exited %d, want %d", sig.arg, code, sig.want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("kill %s: run did not return", sig.arg)
		}
	}
	if _, stderr, code := e.moat("kill", "x", "NOSUCH"); code != 1 || !strings.Contains(stderr, "container does not exist") {
		t.Errorf("kill unknown: exit %d, %q", code, stderr)
	}
}

// TestRuntimeRunExitCodes: `moat run` exits with the container's status;
// 128+signal when it was killed.
func TestRuntimeRunExitCodes(t *testing.T) {
	e := newMoatEnv(t)
	tests := []struct {
		name  string
		args  []string
		noPID bool // no pid namespace: sh is not pid 1 and SIGKILL to itself works
		want  int
	}{
		{"exit 0", []string{"sh", "-c", "exit 0"}, false, 0},
		{"exit 7", []string{"sh", "-c", "exit 7"}, false, 7},
		{"kill -9 self", []string{"sh", "-c", "kill -9 $$"}, true, 137},
		{"child killed", []string{"sh", "-c", `sh -c 'kill -9 $$'; exit $?`}, false, 137},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := fixtures.NewBundle(t, tt.args...)
			if tt.noPID {
				spec, err := fixtures.ReadSpec(bundle)
				if err != nil {
					t.Fatal(err)
				}
				spec.Linux.Namespaces = slicesDelete(spec.Linux.Namespaces, specs.PIDNamespace)
				if err := fixtures.WriteSpec(bundle, spec); err != nil {
					t.Fatal(err)
				}
			}
			id := e.id("exit")
			_, stderr, code := e.moat("run", "--bundle", bundle, id)
			if code != tt.want {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.want, stderr)
			}
			if _, _, code := e.moat("state", id); code == 0 {
				t.Errorf("run without --keep left the container behind")
			}
			assertNoCgroup(t, id)
		})
	}

	t.Run("killed from outside", func(t *testing.T) {
		bundle := fixtures.NewBundle(t, "sleep", "300")
		id := e.id("extkill")
		done := make(chan int, 1)
		go func() {
			_, _, code := e.moat("run", "--bundle", bundle, id)
			done <- code
		}()
		e.waitStatus(id, "running")
		e.mustMoat("kill", id, "KILL")
		select {
		case code := <-done:
			if code != 137 {
				t.Errorf("exit %d, want 137", code)
			}
		case <-time.After(time.Minute):
			t.Fatal("run did not return after kill")
		}
	})

	t.Run("keep", func(t *testing.T) {
		bundle := fixtures.NewBundle(t, "sh", "-c", "exit 4")
		id := e.id("keep")
		if _, _, code := e.moat("run", "--keep", "--bundle", bundle, id); code != 4 {
			t.Errorf("exit %d, want 4", code)
		}
		if s := e.state(id); s.Status != "stopped" {
			t.Errorf("kept container is %s", s.Status)
		}
		e.mustMoat("delete", id)
	})

	t.Run("detach", func(t *testing.T) {
		bundle := fixtures.NewBundle(t, longRunning...)
		id := e.id("detach")
		e.mustMoat("run", "-d", "--bundle", bundle, id)
		e.waitStatus(id, "running")
		e.mustMoat("delete", "--force", id)
		assertNoCgroup(t, id)
	})
}

func slicesDelete(ns []specs.LinuxNamespace, typ specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, n := range ns {
		if n.Type != typ {
			out = append(out, n)
		}
	}
	return out
}

// TestRuntimeStdio: moat run passes stdin, stdout and stderr through.
func TestRuntimeStdio(t *testing.T) {
	e := newMoatEnv(t)
	bundle := fixtures.NewBundle(t, "sh", "-c", `read line; echo "got $line"; echo to-stderr >&2`)
	stdout, stderr, code := e.moatStdin(strings.NewReader("hello\n"), "run", "--bundle", bundle, e.id("stdio"))
	if code != 0 || stdout != "got hello\n" || stderr != "to-stderr\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestRuntimeDeleteForce: delete --force kills and removes a running
// container and is a no-op for an unknown one.
func TestRuntimeDeleteForce(t *testing.T) {
	e := newMoatEnv(t)
	bundle := fixtures.NewBundle(t, longRunning...)
	id := e.id("force")
	e.mustMoat("create", "--bundle", bundle, id)
	e.mustMoat("start", id)
	pid := e.state(id).Pid
	e.mustMoat("delete", "--force", id)
	if _, stderr, code := e.moat("state", id); code != 1 || !strings.Contains(stderr, "container does not exist") {
		t.Errorf("state after delete --force: exit %d, %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
		if data, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat")); !strings.Contains(string(data), ") Z ") {
			t.Errorf("init process %d still alive", pid)
		}
	}
	assertNoCgroup(t, id)

	// A created (never started) container is deleted without --force.
	id2 := e.id("created")
	e.mustMoat("create", "--bundle", bundle, id2)
	e.mustMoat("delete", id2)
	e.mustMoat("delete", "--force", "no-such-container")
}

// TestRuntimeUnknownID: commands on a missing container fail with runc's
// "container does not exist", which containerd and Docker match on.
func TestRuntimeUnknownID(t *testing.T) {
	e := newMoatEnv(t)
	id := "moat-e2e-missing"
	for _, args := range [][]string{
		{"state", id}, {"start", id}, {"kill", id}, {"kill", id, "KILL"}, {"delete", id},
		{"pause", id}, {"resume", id}, {"ps", id}, {"events", "--stats", id}, {"update", "--memory", "1M", id},
	} {
		if _, stderr, code := e.moat(args...); code != 1 || !strings.Contains(stderr, "container does not exist") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if _, stderr, code := e.moat("exec", id, "true"); code != 255 || !strings.Contains(stderr, "exec failed: container does not exist") {
		t.Errorf("exec: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := e.moat("state"); code != 1 || !strings.Contains(stderr, `requires exactly 1 argument(s)`) {
		t.Errorf("state without id: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := e.moat("state", "../x"); code != 1 || !strings.Contains(stderr, "invalid container ID format") {
		t.Errorf("state ../x: exit %d, stderr %q", code, stderr)
	}
}

// TestRuntimeJSONLog: with --log-format json errors go to the --log file
// as runc's JSON lines, appended, never truncated.
func TestRuntimeJSONLog(t *testing.T) {
	e := newMoatEnv(t)
	logFile := filepath.Join(t.TempDir(), "log.json")
	for range 2 {
		if _, _, code := e.moat("--log", logFile, "--log-format", "json", "state", "nope"); code != 1 {
			t.Fatalf("exit %d", code)
		}
	}
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]string
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2 (appended)", len(lines))
	}
	for _, m := range lines {
		if m["level"] != "error" || m["msg"] != "container does not exist" || m["time"] == "" {
			t.Errorf("log line %v", m)
		}
	}
}
