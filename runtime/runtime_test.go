package runtime

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moatsandbox/moat/hooks"

	"github.com/moatsandbox/moat/policy"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestPrepareSandboxRefusals: sandbox mode refuses what it cannot confine
// and invalid policies before touching the host.
func TestPrepareSandboxRefusals(t *testing.T) {
	cfg := policy.DefaultConfig()
	cfg.StateDir = t.TempDir()
	mountNS := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	tests := []struct {
		name  string
		spec  *specs.Spec
		want  error
		match string
	}{
		{"no mount namespace", &specs.Spec{Process: &specs.Process{Args: []string{"true"}},
			Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}}, hooks.ErrNoMountNamespace, ""},
		{"user namespace", &specs.Spec{Process: &specs.Process{Args: []string{"true"}},
			Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UserNamespace}}}}, hooks.ErrUserNamespace, ""},
		{"notify listener", &specs.Spec{Process: &specs.Process{Args: []string{"true"}},
			Linux: &specs.Linux{Namespaces: mountNS, Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}}}, hooks.ErrSeccompNotify, ""},
		{"invalid policy", &specs.Spec{Process: &specs.Process{Args: []string{"true"}}, Linux: &specs.Linux{Namespaces: mountNS},
			Annotations: map[string]string{policy.AnnotationPolicy: "version: 2\n"}}, nil, "unsupported version 2"},
		{"no process", &specs.Spec{Linux: &specs.Linux{Namespaces: mountNS}}, nil, "no process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := prepareSandbox(SandboxRequest{ID: "x", Root: "/run/moat-test", Bundle: t.TempDir(), Spec: tt.spec, Config: cfg})
			if got != nil || err == nil {
				t.Fatalf("prepareSandbox = %v, %v; want an error", got, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if tt.match != "" && !strings.Contains(err.Error(), tt.match) {
				t.Errorf("err = %v, want it to mention %q", err, tt.match)
			}
			if entries, _ := os.ReadDir(cfg.StateDir); len(entries) != 0 {
				t.Errorf("state left behind: %v", entries)
			}
		})
	}
}

func TestSandboxDir(t *testing.T) {
	cfg := policy.DefaultConfig()
	a, b := sandboxDir(cfg, "/run/a", "x"), sandboxDir(cfg, "/run/b", "x")
	if a == b || !strings.HasPrefix(a, cfg.StateDir+"/sandboxes/") {
		t.Errorf("sandboxDir: %s, %s", a, b)
	}
	if sandboxDir(cfg, "/run/a", "x") != a {
		t.Error("sandboxDir is not stable")
	}
}

// TestConfinementPolicy: a CRI pod's sandbox (pause) container, marked by
// containerd's annotations, is confined without the policy's process,
// filesystem and landlock sections (its image has no users and none of the
// paths), while the network sandbox keeps the whole policy; every other
// container is confined by its policy.
func TestConfinementPolicy(t *testing.T) {
	pol, _, err := policy.Parse("pod.yaml", []byte(`version: 1
filesystem_policy:
  read_only: [/usr]
landlock:
  compatibility: hard_requirement
process:
  run_as_user: sandbox
network_policies:
  upstream:
    endpoints: [{host: example.com, port: 443}]
`))
	if err != nil {
		t.Fatal(err)
	}
	const id = "0123abcd"
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		pause       bool
	}{
		{"pause", map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": id}, true},
		{"pod container", map[string]string{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": id}, false},
		{"marked, another pod's id", map[string]string{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "ffff"}, false},
		{"marked, no pod id", map[string]string{"io.kubernetes.cri.container-type": "sandbox"}, false},
		{"no annotations", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := confinementPolicy(pol, &specs.Spec{Annotations: tt.annotations}, id)
			if !tt.pause {
				if got != pol {
					t.Errorf("a container that is not a pod's sandbox is confined by %+v, not its policy", got)
				}
				return
			}
			if got.Process != nil || got.Filesystem != nil || got.Landlock.Hard() || len(got.Network) != 0 {
				t.Errorf("pause container confined by %+v; want no process, filesystem or landlock section", got)
			}
			if pol.Process == nil || len(pol.Network) != 1 {
				t.Errorf("the pod's policy was changed: %+v", pol)
			}
		})
	}
}

func TestNormalizeSpec(t *testing.T) {
	spec := &specs.Spec{
		Linux: &specs.Linux{Devices: []specs.LinuxDevice{
			{Path: "/dev/fifo", Type: "p", Major: 8, Minor: 666},
			{Path: "/dev/sda", Type: "b", Major: 8, Minor: 0},
		}},
		Mounts: []specs.Mount{
			{Destination: "/a", Type: "bind", Source: "/etc", Options: []string{"rbind", "ro", "mode=755", "size=1k", "rshared"}},
			{Destination: "/b", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1k"}},
		},
	}
	normalizeSpec(spec, []string{"rbind", "bind", "ro", "rshared", "nosuid"})
	if d := spec.Linux.Devices[0]; d.Major != 0 || d.Minor != 0 {
		t.Errorf("fifo kept %d:%d", d.Major, d.Minor)
	}
	if d := spec.Linux.Devices[1]; d.Major != 8 {
		t.Errorf("block device changed: %+v", d)
	}
	if got := spec.Mounts[0].Options; !slices.Equal(got, []string{"rbind", "ro", "rshared"}) {
		t.Errorf("bind options = %v", got)
	}
	if got := spec.Mounts[1].Options; !slices.Equal(got, []string{"nosuid", "size=1k"}) {
		t.Errorf("tmpfs options changed: %v", got)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]unix.Signal{"KILL": unix.SIGKILL, "sigterm": unix.SIGTERM, "SIGUSR1": unix.SIGUSR1, "9": unix.SIGKILL} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSignal("NOPE"); err == nil || err.Error() != `unknown signal "NOPE"` {
		t.Errorf("ParseSignal(NOPE) err = %v", err)
	}
}
