package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The runtime tests run moat built as `make build` builds it: with cgo and
// the seccomp tag (Docker always passes a seccomp profile).
var (
	runtimeBinOnce sync.Once
	runtimeBin     string
	runtimeBinErr  error
)

// moatBuildTags and moatLDFlags build cmd/moat as the Makefile's
// MOAT_TAGS and MOAT_LDFLAGS do: libseccomp, no urfave/cli documentation
// generators, linked statically.
const (
	moatBuildTags = "seccomp urfave_cli_no_docs netgo osusergo"
	moatLDFlags   = "-extldflags -static"
)

// moatRuntimeBinary builds cmd/moat with moatBuildTags once per package.
func moatRuntimeBinary(t *testing.T) string {
	t.Helper()
	runtimeBinOnce.Do(func() {
		dir := filepath.Join(binDir, "runtime")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			runtimeBinErr = err
			return
		}
		bin := filepath.Join(dir, "moat")
		cmd := exec.Command("go", "build", "-tags", moatBuildTags, "-ldflags", moatLDFlags, "-o", bin, "../../cmd/moat")
		out, err := cmd.CombinedOutput()
		if err != nil {
			runtimeBinErr = fmt.Errorf("go build -tags %q ./cmd/moat: %v\n%s", moatBuildTags, err, out)
			return
		}
		runtimeBin = bin
	})
	if runtimeBinErr != nil {
		t.Fatal(runtimeBinErr)
	}
	return runtimeBin
}

var idSeq atomic.Int64

// moatEnv runs the built moat against a private state root with an admin
// config that has the sandbox off, and force-deletes every container left
// in that root when the test ends.
type moatEnv struct {
	t      *testing.T
	bin    string
	root   string
	config string
	logDir string // the sandbox's log_dir (sandbox on)
}

func newMoatEnv(t *testing.T) *moatEnv {
	t.Helper()
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	e := &moatEnv{t: t, bin: moatRuntimeBinary(t)}
	dir := t.TempDir()
	e.root = filepath.Join(dir, "state")
	var err error
	if e.config, err = fixtures.SandboxOffConfig(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cleanup)
	return e
}

// cleanup force-deletes whatever the test left behind and checks that the
// containers' cgroups went with them.
func (e *moatEnv) cleanup() {
	entries, _ := os.ReadDir(e.root)
	for _, ent := range entries {
		if _, stderr, code := e.moat("delete", "--force", ent.Name()); code != 0 {
			e.t.Errorf("cleanup: delete --force %s: exit %d: %s", ent.Name(), code, stderr)
		}
		assertNoCgroup(e.t, ent.Name())
	}
}

// id returns a container id unique on this host.
func (e *moatEnv) id(name string) string {
	return fmt.Sprintf("moat-e2e-%s-%d-%d", name, os.Getpid(), idSeq.Add(1))
}

// command returns moat with the env's global flags.
func (e *moatEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--root", e.root, "--config", e.config}, args...)
	return exec.CommandContext(ctx, e.bin, full...)
}

// moat runs a command with empty stdin and returns its output and exit
// code. Output goes through files, not pipes: a container created or run
// detached inherits moat's stdio, and a pipe would stay open after moat
// exits.
func (e *moatEnv) moat(args ...string) (stdout, stderr string, code int) {
	return e.moatStdin(nil, args...)
}

func (e *moatEnv) moatStdin(stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.command(ctx, args...)
	return runWithFiles(e.t, cmd, stdin)
}

// runWithFiles runs cmd with stdout and stderr in temporary files.
func runWithFiles(t *testing.T, cmd *exec.Cmd, stdin io.Reader) (stdout, stderr string, code int) {
	t.Helper()
	dir := t.TempDir()
	outF, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer outF.Close()
	errF, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errF.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, outF, errF
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal()) // as a shell reports it
		}
	case err != nil:
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	o, _ := os.ReadFile(outF.Name())
	r, _ := os.ReadFile(errF.Name())
	return string(o), string(r), code
}

// mustMoat runs a command that must succeed.
func (e *moatEnv) mustMoat(args ...string) string {
	e.t.Helper()
	stdout, stderr, code := e.moat(args...)
	if code != 0 {
		e.t.Fatalf("moat %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// containerState is the state JSON of `moat state`.
type containerState struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations"`
}

func (e *moatEnv) state(id string) containerState {
	e.t.Helper()
	out := e.mustMoat("state", id)
	var s containerState
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		e.t.Fatalf("state %s: %v\n%s", id, err, out)
	}
	return s
}

// waitStatus polls the container's state until it has the given status;
// a container that does not exist yet (moat run still creating it) is
// polled too.
func (e *moatEnv) waitStatus(id, status string) containerState {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		stdout, stderr, code := e.moat("state", id)
		var s containerState
		if code == 0 {
			if err := json.Unmarshal([]byte(stdout), &s); err != nil {
				e.t.Fatalf("state %s: %v\n%s", id, err, stdout)
			}
			if s.Status == status {
				return s
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is %q (%s), want %s", id, s.Status, strings.TrimSpace(stderr), status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNoCgroup fails when a cgroup named like the container still
// exists in a v1 hierarchy or the unified one.
func assertNoCgroup(t *testing.T, id string) {
	t.Helper()
	for _, ctrl := range []string{"pids", "devices", "freezer", "cpu", "blkio", "unified"} {
		p := filepath.Join("/sys/fs/cgroup", ctrl, id)
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left behind", p)
		}
	}
}
