package e2e

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// consoleReceiver is the other end of --console-socket: it accepts one
// connection and receives the pty master moat sends over SCM_RIGHTS.
type consoleReceiver struct {
	path string
	ln   *net.UnixListener
	got  chan *os.File
	err  chan error
}

func newConsoleReceiver(t *testing.T) *consoleReceiver {
	t.Helper()
	// Socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "moat-cs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &consoleReceiver{path: filepath.Join(dir, "console.sock"), got: make(chan *os.File, 1), err: make(chan error, 1)}
	r.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: r.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ln.Close() })
	go r.accept()
	return r
}

func (r *consoleReceiver) accept() {
	conn, err := r.ln.AcceptUnix()
	if err != nil {
		r.err <- err
		return
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		r.err <- err
		return
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		r.err <- errors.Join(errors.New("no control message"), err)
		return
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		r.err <- errors.Join(errors.New("no fd"), err)
		return
	}
	r.got <- os.NewFile(uintptr(fds[0]), "pty-master")
}

// master waits for the pty master.
func (r *consoleReceiver) master(t *testing.T) *os.File {
	t.Helper()
	select {
	case f := <-r.got:
		t.Cleanup(func() { f.Close() })
		return f
	case err := <-r.err:
		t.Fatalf("console socket: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no console received")
	}
	return nil
}

// readUntil reads from the pty master until want appears or it closes.
func readUntil(t *testing.T, f *os.File, want string) string {
	t.Helper()
	var buf bytes.Buffer
	deadline := time.Now().Add(time.Minute)
	chunk := make([]byte, 1024)
	for !strings.Contains(buf.String(), want) && time.Now().Before(deadline) {
		_ = f.SetReadDeadline(time.Now().Add(time.Second))
		n, err := f.Read(chunk)
		buf.Write(chunk[:n])
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			break // EIO once the slave side is closed
		}
	}
	return buf.String()
}

// TestRuntimeConsoleSocket: a terminal container and `exec -t` send the
// pty master to --console-socket, as containerd's shim expects.
func TestRuntimeConsoleSocket(t *testing.T) {
	e := newMoatEnv(t)
	bundle := fixtures.NewBundle(t, "sh", "-c", `tty; echo init-tty-ok; sleep 300`)
	spec, err := fixtures.ReadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	spec.Process.Terminal = true
	if err := fixtures.WriteSpec(bundle, spec); err != nil {
		t.Fatal(err)
	}
	id := e.id("tty")

	// Without a console socket a detached terminal container is refused.
	if _, stderr, code := e.moat("create", "--bundle", bundle, id); code != 1 || !strings.Contains(stderr, "cannot allocate tty if runc will detach without setting console socket") {
		t.Fatalf("create without console socket: exit %d, %q", code, stderr)
	}

	cs := newConsoleReceiver(t)
	e.mustMoat("create", "--bundle", bundle, "--console-socket", cs.path, id)
	master := cs.master(t)
	e.mustMoat("start", id)
	if out := readUntil(t, master, "init-tty-ok"); !strings.Contains(out, "/dev/pts/0") || !strings.Contains(out, "init-tty-ok") {
		t.Errorf("init console output %q", out)
	}

	cs2 := newConsoleReceiver(t)
	e.mustMoat("exec", "-t", "-d", "--console-socket", cs2.path, id, "sh", "-c", "tty; echo exec-tty-ok")
	if out := readUntil(t, cs2.master(t), "exec-tty-ok"); !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "exec-tty-ok") {
		t.Errorf("exec console output %q", out)
	}
	e.mustMoat("delete", "--force", id)
}

// TestRuntimeRefusals: what moat refuses fails with a precise message and
// leaves nothing behind: no state directory, no cgroup, no process.
func TestRuntimeRefusals(t *testing.T) {
	e := newMoatEnv(t)
	sandboxOn := filepath.Join(t.TempDir(), "sandbox-on.yaml")
	if err := os.WriteFile(sandboxOn, []byte("sandbox: on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	userns := func(s *specs.Spec) {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	}
	tests := []struct {
		name   string
		config string // "" = the env's sandbox-off config
		global []string
		edit   func(*specs.Spec)
		raw    string // config.json body instead of a spec
		want   string
	}{
		{name: "malformed config.json", raw: `{"ociVersion": "1.0.2", "process": `, want: "parse config.json: unexpected EOF"},
		{name: "null config.json", raw: `null`, want: "config cannot be null"},
		{name: "no process", raw: `{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}`, want: "process property must not be empty"},
		{name: "relative cwd", edit: func(s *specs.Spec) { s.Process.Cwd = "tmp" }, want: "Cwd must be an absolute path"},
		{name: "sandbox on: user namespace", config: sandboxOn, edit: userns, want: "user-namespaced containers are not yet supported by moat"},
		{name: "sandbox on: seccomp listener", config: sandboxOn, edit: func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/agent.sock",
				Syscalls: []specs.LinuxSyscall{{Names: []string{"mkdir"}, Action: specs.ActNotify}}}
		}, want: "seccomp profiles with a notify listener (SCMP_ACT_NOTIFY or linux.seccomp.listenerPath) are not supported by moat"},
		{name: "sandbox on: bad policy flag", config: sandboxOn, global: []string{"--policy", "/nonexistent/policy.yaml"}, want: "policy from --policy /nonexistent/policy.yaml"},
		{name: "missing admin config", config: "/nonexistent/moat.yaml", want: "admin config: read config"},
		{name: "systemd cgroup", global: []string{"--systemd-cgroup"}, want: "systemd not running on this host, cannot use systemd cgroups manager"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := fixtures.NewBundle(t, "true")
			if tt.edit != nil {
				spec, _ := fixtures.ReadSpec(bundle)
				tt.edit(spec)
				if err := fixtures.WriteSpec(bundle, spec); err != nil {
					t.Fatal(err)
				}
			}
			if tt.raw != "" {
				if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(tt.raw), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			config := e.config
			if tt.config != "" {
				config = tt.config
			}
			id := e.id("refuse")
			for _, cmd := range []string{"create", "run"} {
				args := append(append([]string{"--config", config}, tt.global...), cmd, "--bundle", bundle, id)
				_, stderr, code := e.moat(args...)
				stderr = strings.ReplaceAll(stderr, `\"`, `"`) // logrus quotes msg
				if code != 1 || !strings.Contains(stderr, tt.want) || !strings.Contains(stderr, "moat "+cmd+" failed: ") {
					t.Errorf("%s: exit %d, stderr %q; want %q", cmd, code, stderr, tt.want)
				}
				if _, err := os.Stat(filepath.Join(e.root, id)); err == nil {
					t.Errorf("%s left a state directory", cmd)
				}
				assertNoCgroup(t, id)
			}
		})
	}
	// With the sandbox off, a user namespace is libcontainer's business,
	// exactly as with runc.
	t.Run("sandbox off: user namespace runs", func(t *testing.T) {
		// The mapped root (host uid 100000) must reach the rootfs.
		dir, err := os.MkdirTemp("", "moat-userns-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bundle, err := fixtures.Bundle(dir, "sh", "-c", "cat /proc/self/uid_map")
		if err != nil {
			t.Fatal(err)
		}
		spec, _ := fixtures.ReadSpec(bundle)
		userns(spec)
		spec.Root.Readonly = true
		spec.Mounts = slicesFilterMounts(spec.Mounts, "/sys/fs/cgroup")
		if err := fixtures.WriteSpec(bundle, spec); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := e.moat("run", "--bundle", bundle, e.id("userns"))
		if code != 0 || !strings.Contains(stdout, "100000") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}

func slicesFilterMounts(ms []specs.Mount, dest string) []specs.Mount {
	var out []specs.Mount
	for _, m := range ms {
		if m.Destination != dest {
			out = append(out, m)
		}
	}
	return out
}

// TestRuntimeFeaturesSpecCheckpoint covers the commands that need no
// container: features, spec, checkpoint and restore.
func TestRuntimeFeaturesSpecCheckpoint(t *testing.T) {
	e := newMoatEnv(t)
	var feat struct {
		OCIVersionMin string            `json:"ociVersionMin"`
		OCIVersionMax string            `json:"ociVersionMax"`
		Hooks         []string          `json:"hooks"`
		Annotations   map[string]string `json:"annotations"`
		Linux         struct {
			Namespaces []string `json:"namespaces"`
			Seccomp    struct {
				Enabled bool `json:"enabled"`
			} `json:"seccomp"`
		} `json:"linux"`
	}
	out := e.mustMoat("features")
	if err := json.Unmarshal([]byte(out), &feat); err != nil {
		t.Fatalf("features: %v\n%s", err, out)
	}
	if feat.OCIVersionMin != "1.0.0" || feat.OCIVersionMax != specs.Version || !feat.Linux.Seccomp.Enabled ||
		len(feat.Hooks) == 0 || len(feat.Linux.Namespaces) < 7 || feat.Annotations["org.opencontainers.runc.version"] == "" ||
		feat.Annotations["io.github.seccomp.libseccomp.version"] == "" {
		t.Errorf("features = %+v", feat)
	}

	dir := t.TempDir()
	e.mustMoat("spec", "--bundle", dir)
	spec, err := fixtures.ReadSpec(dir)
	if err != nil || spec.Process == nil || spec.Process.Args[0] != "sh" || !spec.Process.Terminal || spec.Root.Path != "rootfs" {
		t.Errorf("spec wrote %+v, %v", spec, err)
	}
	if _, stderr, code := e.moat("spec", "--bundle", dir); code != 1 || !strings.Contains(stderr, "File config.json exists. Remove it first") {
		t.Errorf("second spec: exit %d, %q", code, stderr)
	}

	for _, cmd := range []string{"checkpoint", "restore"} {
		if _, stderr, code := e.moat(cmd, "--image-path", dir, "x"); code != 1 || !strings.Contains(stderr, cmd+" x: not supported by moat") {
			t.Errorf("%s: exit %d, %q", cmd, code, stderr)
		}
	}
	if _, stderr, code := e.moat("frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, %q", code, stderr)
	}
	if out := e.mustMoat("--help"); !strings.Contains(out, "create") || !strings.Contains(out, "policy") {
		t.Errorf("help lacks commands:\n%s", out)
	}
}

// TestRuntimeDeps: the moat binary links neither OPA nor containerd
// proper (github.com/containerd/console is a dependency of libcontainer
// itself, a small terminal package with no init cost, and allowed), nor,
// built with moat's tags, urfave/cli's documentation generators: their
// Markdown parser compiles regular expressions and tables at every exec.
func TestRuntimeDeps(t *testing.T) {
	// The tests build moat as the Makefile does.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"MOAT_TAGS": moatBuildTags, "MOAT_LDFLAGS": moatLDFlags} {
		if !regexp.MustCompile(`\n` + name + ` +\?= ` + regexp.QuoteMeta(want) + `\n`).Match(mk) {
			t.Errorf("the Makefile's %s is not %q", name, want)
		}
	}
	// Linked statically: no program interpreter (dynamic loader) to run
	// at every exec.
	f, err := elf.Open(moatRuntimeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("cmd/moat is linked dynamically")
		}
	}
	out, err := exec.Command("go", "list", "-deps", "-tags", moatBuildTags, "../../cmd/moat").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(p, "open-policy-agent") || (strings.Contains(p, "containerd") && p != "github.com/containerd/console") ||
			strings.Contains(p, "blackfriday") || strings.Contains(p, "go-md2man") {
			t.Errorf("cmd/moat depends on %s", p)
		}
	}
	if !strings.Contains(string(out), "github.com/opencontainers/runc/libcontainer\n") {
		t.Error("cmd/moat does not link libcontainer")
	}
	_ = io.Discard
}

// TestInitDeps: moat-init, which every sandboxed process starts with, links
// neither the policy package nor what it needs to parse policies: their
// package initialisation and page faults cost about 1 ms of every start.
// confine reads the plan's types from policy/plan, which imports nothing.
func TestInitDeps(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "../../cmd/moat-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case p == "github.com/moatsandbox/moat/policy", strings.Contains(p, "yaml"),
			p == "regexp", p == "net/url", p == "net/netip":
			t.Errorf("cmd/moat-init depends on %s", p)
		}
	}
	if !strings.Contains(string(out), "github.com/moatsandbox/moat/policy/plan\n") {
		t.Error("cmd/moat-init does not link policy/plan")
	}
}
