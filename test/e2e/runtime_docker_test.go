package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

const dockerImage = "moat-e2e/busybox:latest"

// TestDockerRunsMoat: Docker 20.10 (Debian's docker.io) with moat
// registered as a runtime in daemon.json. dockerd gets its own data-root,
// exec-root, socket and pidfile, no bridge or iptables, and a private
// containerd the test starts too, so the host's engines are untouched.
func TestDockerRunsMoat(t *testing.T) {
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	requireCommands(t, "dockerd", "docker", "containerd", "ctr", "containerd-shim-runc-v2")
	dir := shortTempDir(t, "moat-dkr-")
	bin := moatRuntimeBinary(t)
	cfg, err := fixtures.SandboxOffConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t, dir)
	sandboxBinaries(t)
	sbDir := filepath.Join(dir, "sandbox")
	if err := os.MkdirAll(sbDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sbPolicy := filepath.Join(sbDir, "policy.yaml")
	sbConfig := filepath.Join(sbDir, "config.yaml")
	if err := os.WriteFile(sbPolicy, []byte(sandboxPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sbConfig, []byte(fmt.Sprintf("sandbox: on\nstate_dir: %s\n", filepath.Join(sbDir, "state"))), 0o644); err != nil {
		t.Fatal(err)
	}

	dk := startDocker(t, dir, c, map[string]any{
		"bridge":     "none",
		"iptables":   false,
		"ip-forward": false,
		"runtimes": map[string]any{
			"moat":         map[string]any{"path": bin, "runtimeArgs": []string{"--config", cfg}},
			"moat-sandbox": map[string]any{"path": bin, "runtimeArgs": []string{"--config", sbConfig, "--policy", sbPolicy}},
		},
	})
	docker, execRoot := dk.docker, dk.execRoot
	if out, _ := docker("info", "--format", "{{json .Runtimes}}"); !strings.Contains(out, `"moat"`) {
		t.Fatalf("moat is not a registered runtime: %s", out)
	}

	runArgs := func(args ...string) []string {
		return append([]string{"run", "--rm", "--runtime", "moat", "--network", "none", dockerImage}, args...)
	}
	for _, tt := range exitCases {
		t.Run(tt.name, func(t *testing.T) {
			out, code := docker(runArgs(tt.args...)...)
			if code != tt.want || !strings.Contains(out, tt.out) {
				t.Errorf("docker run: exit %d, want %d; output %q", code, tt.want, out)
			}
		})
	}

	t.Run("exec stop rm", func(t *testing.T) {
		name := fmt.Sprintf("moat-dkr-%d", time.Now().UnixNano())
		out, code := docker("run", "-d", "--name", name, "--runtime", "moat", "--network", "none", dockerImage, "sleep", "300")
		if code != 0 {
			t.Fatalf("docker run -d: %s", out)
		}
		full := strings.TrimSpace(out)
		// Docker gives every runc-compatible runtime a --root under its
		// exec-root (runtime-runc/moby in 20.10); find moat's state there.
		matches, _ := filepath.Glob(filepath.Join(execRoot, "runtime-*", "moby", full))
		if len(matches) != 1 {
			t.Fatalf("no moat state directory for %s under %s", full, execRoot)
		}
		state := filepath.Dir(matches[0])
		if out, code := runCmd(t, time.Minute, bin, "--root", state, "state", full); code != 0 || !strings.Contains(out, `"status": "running"`) {
			t.Errorf("moat state in docker's root: exit %d\n%s", code, out)
		}
		if out, code := docker("exec", name, "sh", "-c", "echo exec-ok; exit 5"); code != 5 || !strings.Contains(out, "exec-ok") {
			t.Errorf("docker exec: exit %d, %q", code, out)
		}
		if out, code := docker("exec", "-t", name, "tty"); code != 0 || !strings.Contains(out, "/dev/pts/") {
			t.Errorf("docker exec -t: exit %d, %q", code, out)
		}
		if out, code := docker("stop", "-t", "1", name); code != 0 {
			t.Fatalf("docker stop: %s", out)
		}
		if out, _ := docker("inspect", "-f", "{{.State.ExitCode}}", name); strings.TrimSpace(out) != "137" {
			t.Errorf("exit code after stop = %q, want 137 (sleep ignores SIGTERM as pid 1)", out)
		}
		if out, code := docker("rm", name); code != 0 {
			t.Errorf("docker rm: %s", out)
		}
		if out, _ := runCmd(t, time.Minute, bin, "--root", state, "list", "-q"); strings.Contains(out, full) {
			t.Errorf("container still in moat's root after docker rm: %s", out)
		}
		assertNoCgroup(t, full)
	})

	// The sandbox on, with the policy from runtimeArgs: Docker's own
	// seccomp profile and capabilities are applied by moat-init, under
	// moat's filter, Landlock and the policy user, in run and exec alike.
	t.Run("sandbox", func(t *testing.T) {
		out, code := docker("run", "--rm", "--runtime", "moat-sandbox", "--network", "none", dockerImage,
			"sh", "-c", "id -un; mkdir /tmp/d && echo tmp-ok; cat /etc/shadow 2>&1; unshare -U true 2>&1; echo rc=$?")
		for _, want := range []string{"sandbox\n", "tmp-ok", "rc=1"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("docker run: exit %d, output %q lacks %q", code, out, want)
			}
		}
		name := fmt.Sprintf("moat-dkr-sb-%d", time.Now().UnixNano())
		if out, code := docker("run", "-d", "--name", name, "--runtime", "moat-sandbox", "--network", "none", dockerImage, "sleep", "300"); code != 0 {
			t.Fatalf("docker run -d: %s", out)
		}
		if out, code := docker("exec", name, "sh", "-c", "id -un; touch /home/sandbox/x 2>&1; exit 3"); code != 3 ||
			!strings.Contains(out, "sandbox") || !strings.Contains(out, "Permission denied") {
			t.Errorf("docker exec: exit %d, %q", code, out)
		}
		// moat-init is PID 1 and forwards SIGTERM, so sleep stops at once.
		if out, code := docker("stop", "-t", "10", name); code != 0 {
			t.Fatalf("docker stop: %s", out)
		}
		if out, _ := docker("inspect", "-f", "{{.State.ExitCode}}", name); strings.TrimSpace(out) != "143" {
			t.Errorf("exit code after stop = %q, want 143 (SIGTERM forwarded to sleep)", out)
		}
		if out, code := docker("rm", name); code != 0 {
			t.Errorf("docker rm: %s", out)
		}
		if entries, _ := os.ReadDir(filepath.Join(sbDir, "state", "sandboxes")); len(entries) != 0 {
			t.Errorf("sandbox state left after docker rm: %d entries", len(entries))
		}
	})
}

// dockerEnv is a private dockerd (own data-root, exec-root, socket and
// pidfile) on a private containerd, with the busybox image imported.
type dockerEnv struct {
	execRoot string
	docker   func(args ...string) (string, int)
}

// startDocker starts dockerd with settings (daemon.json keys, runtimes
// among them) over the test's own paths, waits for it, imports
// dockerImage, and removes every container and the image at cleanup.
func startDocker(t *testing.T, dir string, c *containerdEnv, settings map[string]any) *dockerEnv {
	t.Helper()
	sock := filepath.Join(dir, "docker.sock")
	e := &dockerEnv{execRoot: filepath.Join(dir, "exec")}
	cfg := map[string]any{
		"data-root":  filepath.Join(dir, "data"),
		"exec-root":  e.execRoot,
		"pidfile":    filepath.Join(dir, "docker.pid"),
		"hosts":      []string{"unix://" + sock},
		"containerd": c.sock,
	}
	for k, v := range settings {
		cfg[k] = v
	}
	daemonJSON, _ := json.Marshal(cfg)
	daemonFile := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(daemonFile, daemonJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "dockerd", "dockerd", "--config-file", daemonFile)
	e.docker = func(args ...string) (string, int) {
		t.Helper()
		return runCmd(t, 2*time.Minute, append([]string{"docker", "-H", "unix://" + sock}, args...)...)
	}
	d.waitReady(t, func() error {
		if out, code := e.docker("version"); code != 0 {
			return fmt.Errorf("docker version: %s", out)
		}
		return nil
	})
	t.Cleanup(func() {
		out, _ := e.docker("ps", "-aq")
		for _, id := range strings.Fields(out) {
			if out, code := e.docker("rm", "-f", id); code != 0 {
				t.Errorf("cleanup: docker rm -f %s: %s", id, out)
			}
		}
		e.docker("rmi", "-f", dockerImage)
	})
	rootfs := filepath.Join(dir, "rootfs")
	if err := fixtures.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	err = fixtures.RootfsTar(rootfs, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if out, code := e.docker("import", "-c", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", "-c", `CMD ["/bin/sh"]`, tarPath, dockerImage); code != 0 {
		t.Fatalf("docker import: %s", out)
	}
	return e
}
