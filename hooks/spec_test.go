package hooks

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/confine"
	"github.com/moatsandbox/moat/policy"
)

var dockerCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func testSpec() *specs.Spec {
	return &specs.Spec{
		Version: "1.0.2",
		Process: &specs.Process{
			Args: []string{"python3", "agent.py"},
			Env:  []string{"PATH=/usr/bin:/bin", "HOME=/root", "TERM=xterm"},
			Cwd:  "/app",
			User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{27}},
			Capabilities: &specs.LinuxCapabilities{
				Bounding: []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}, Effective: []string{"CAP_NET_BIND_SERVICE"},
				Permitted: []string{"CAP_NET_BIND_SERVICE"}, Ambient: []string{"CAP_NET_BIND_SERVICE"},
				Inheritable: []string{"CAP_NET_BIND_SERVICE"},
			},
			NoNewPrivileges: true,
		},
		Root:   &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.MountNamespace}},
			Seccomp: &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno,
				Architectures: []specs.Arch{specs.ArchX86_64},
				Syscalls:      []specs.LinuxSyscall{{Names: []string{"read", "write"}, Action: specs.ActAllow}},
			},
		},
	}
}

var containerProg = &confine.SeccompProgram{Name: "container", Instructions: []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}}

func testInput() RewriteInput {
	return RewriteInput{
		Policy:           policy.DefaultPolicy(),
		Landlock:         &policy.Plan{Compatibility: policy.BestEffort, Rules: []policy.PlanRule{{Path: "/usr", Access: policy.AccessRO}}},
		ContainerSeccomp: containerProg,
		InitPath:         "/usr/local/libexec/moat/moat-init",
		PlanPath:         "/run/moat/c1/plan.json",
	}
}

func TestRewrite(t *testing.T) {
	spec := testSpec()
	before, _ := json.Marshal(spec)
	in := testInput()
	out, plan, err := Rewrite(spec, in)
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := json.Marshal(spec); string(after) != string(before) {
		t.Fatal("Rewrite modified its input")
	}
	p := out.Process
	if want := []string{"/.moat/init", "--", "python3", "agent.py"}; !slices.Equal(p.Args, want) {
		t.Errorf("args %v, want %v", p.Args, want)
	}
	if p.User.UID != 0 || p.User.GID != 0 || len(p.User.AdditionalGids) != 0 {
		t.Errorf("init user %+v, want root with no groups", p.User)
	}
	if !p.NoNewPrivileges || out.Linux.Seccomp != nil {
		t.Errorf("init must run with the spec's no_new_privs and without seccomp, got nnp %v seccomp %v", p.NoNewPrivileges, out.Linux.Seccomp)
	}
	want := []string{"CAP_CHOWN", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE"}
	c := p.Capabilities
	if !slices.Equal(c.Bounding, want) || !slices.Equal(c.Permitted, []string{"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE"}) ||
		!slices.Equal(c.Effective, c.Permitted) || c.Inheritable != nil || c.Ambient != nil {
		t.Errorf("init capabilities %+v", c)
	}
	mounts := out.Mounts[len(out.Mounts)-2:]
	if mounts[0].Destination != "/.moat/init" || mounts[0].Source != in.InitPath || !slices.Contains(mounts[0].Options, "ro") ||
		mounts[1].Destination != "/.moat/plan.json" || mounts[1].Source != in.PlanPath || !slices.Contains(mounts[1].Options, "ro") {
		t.Errorf("moat mounts %+v", mounts)
	}
	if !slices.Contains(p.Env, "MOAT_SANDBOX=1") || !slices.Contains(p.Env, "HOME=/root") {
		t.Errorf("env %v: want MOAT_SANDBOX=1 and the spec's HOME (the policy keeps the user)", p.Env)
	}

	// The plan carries what the init no longer has.
	if plan.Version != confine.PlanVersion || plan.Mode != confine.ModeReap || !plan.NoNewPrivileges || plan.NetNS != nil {
		t.Errorf("plan header %+v", plan)
	}
	if !reflect.DeepEqual(plan.Identity, confine.Identity{UID: 1000, GID: 1000, AdditionalGids: []uint32{27}}) {
		t.Errorf("plan identity %+v", plan.Identity)
	}
	sc := spec.Process.Capabilities
	if pc := plan.Capabilities; !slices.Equal(pc.Bounding, sc.Bounding) || !slices.Equal(pc.Ambient, sc.Ambient) || !slices.Equal(pc.Effective, sc.Effective) {
		t.Errorf("plan capabilities %+v", pc)
	}
	if len(plan.Seccomp) != 2 || plan.Seccomp[0].Name != "container" || plan.Seccomp[1].Name != "moat" {
		t.Errorf("plan seccomp order: %+v", plan.Seccomp)
	}
	if plan.Landlock != in.Landlock || !slices.Equal(plan.Env, []string{"MOAT_SANDBOX=1"}) {
		t.Errorf("plan landlock/env: %+v %v", plan.Landlock, plan.Env)
	}
	data, err := plan.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := confine.ParsePlan(data); err != nil {
		t.Errorf("plan does not round-trip: %v", err)
	}
}

func TestRewriteSysAdmin(t *testing.T) {
	for _, c := range []struct {
		name  string
		nnp   bool
		netns bool
		want  bool
	}{
		{"no_new_privs: filters load without it", true, false, false},
		{"no no_new_privs: seccomp and Landlock need it", false, false, true},
		{"setns needs it", true, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := testSpec()
			spec.Process.NoNewPrivileges = c.nnp
			in := testInput()
			if c.netns {
				in.NetNS = &confine.NetNS{FD: 3, Inode: 4026532000}
			}
			out, plan, err := Rewrite(spec, in)
			if err != nil {
				t.Fatal(err)
			}
			caps := out.Process.Capabilities
			for _, set := range [][]string{caps.Bounding, caps.Effective, caps.Permitted} {
				if got := slices.Contains(set, "CAP_SYS_ADMIN"); got != c.want {
					t.Errorf("CAP_SYS_ADMIN in %v: %v, want %v", set, got, c.want)
				}
			}
			if slices.Contains(plan.Capabilities.Bounding, "CAP_SYS_ADMIN") {
				t.Error("CAP_SYS_ADMIN leaked into the program's planned capabilities")
			}
			if (plan.NetNS != nil) != c.netns {
				t.Errorf("plan netns %+v", plan.NetNS)
			}
		})
	}
}

func TestRewriteDockerCapsNeverAll(t *testing.T) {
	spec := testSpec()
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: dockerCaps, Effective: dockerCaps, Permitted: dockerCaps}
	spec.Process.NoNewPrivileges = false
	out, _, err := Rewrite(spec, testInput())
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Process.Capabilities.Bounding; len(got) != len(dockerCaps)+1 || !slices.Contains(got, "CAP_SYS_ADMIN") {
		t.Errorf("init bounding %v: want Docker's %d plus CAP_SYS_ADMIN only", got, len(dockerCaps))
	}

	spec.Process.Capabilities = nil
	out, plan, err := Rewrite(spec, testInput())
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Process.Capabilities.Permitted; !slices.Equal(got, []string{"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_SYS_ADMIN"}) {
		t.Errorf("no spec capabilities: init permitted %v", got)
	}
	if plan.Capabilities != nil {
		t.Errorf("no spec capabilities: plan %+v", plan.Capabilities)
	}
}

func TestRewritePolicyUser(t *testing.T) {
	in := testInput()
	in.Policy = policy.DefaultPolicy()
	in.Policy.Process = &policy.Process{RunAsUser: "sandbox"}
	in.Identity = &confine.Identity{UID: 1001, GID: 1001, AdditionalGids: []uint32{44}, Username: "sandbox", Home: "/home/sandbox"}
	out, plan, err := Rewrite(testSpec(), in)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"HOME=/home/sandbox", "USER=sandbox", "MOAT_SANDBOX=1", "TERM=xterm"} {
		if !slices.Contains(out.Process.Env, kv) {
			t.Errorf("env %v lacks %s", out.Process.Env, kv)
		}
	}
	if slices.Contains(out.Process.Env, "HOME=/root") {
		t.Errorf("env %v still has the spec's HOME", out.Process.Env)
	}
	if !slices.Equal(plan.Env, []string{"MOAT_SANDBOX=1", "HOME=/home/sandbox", "USER=sandbox"}) {
		t.Errorf("plan env %v", plan.Env)
	}
	if !reflect.DeepEqual(plan.Identity, *in.Identity) {
		t.Errorf("plan identity %+v", plan.Identity)
	}
	in.Identity.AdditionalGids[0] = 99
	if plan.Identity.AdditionalGids[0] != 44 {
		t.Error("plan identity aliases the input")
	}
	// Root's capabilities do not follow the move to the policy user; the
	// bounding set stays.
	c, sc := plan.Capabilities, testSpec().Process.Capabilities
	if len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 || !slices.Equal(c.Bounding, sc.Bounding) {
		t.Errorf("plan capabilities for the policy user = %+v", c)
	}
	// A policy that keeps root keeps the spec's capabilities.
	in.Identity = &confine.Identity{UID: 0, GID: 0}
	in.Policy.Process = &policy.Process{RunAsUser: "0"}
	if _, plan, err = Rewrite(testSpec(), in); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan.Capabilities.Effective, sc.Effective) {
		t.Errorf("root policy user: effective %v, want %v", plan.Capabilities.Effective, sc.Effective)
	}
}

func TestRewriteModesAndSlots(t *testing.T) {
	in := testInput()
	in.Mode = policy.InitExec
	in.TrustMounts = []specs.Mount{{Destination: CATrustDir + "/ca.pem", Type: "bind", Source: "/run/moat/c1/ca.pem", Options: []string{"bind", "ro"}}}
	out, plan, err := Rewrite(testSpec(), in)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Mode != confine.ModeExec {
		t.Errorf("mode %q", plan.Mode)
	}
	if last := out.Mounts[len(out.Mounts)-1]; last.Destination != CATrustDir+"/ca.pem" {
		t.Errorf("trust mount missing: %+v", out.Mounts)
	}

	spec := testSpec()
	spec.Linux.Seccomp = nil
	in = testInput()
	in.ContainerSeccomp = nil
	_, plan, err = Rewrite(spec, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Seccomp) != 1 || plan.Seccomp[0].Name != "moat" {
		t.Errorf("without a profile, only moat's filter: %+v", plan.Seccomp)
	}
}

// TestRewriteNetNSPath: the inner netns, when given, becomes the
// container's network namespace; the input spec stays as it was.
func TestRewriteNetNSPath(t *testing.T) {
	in := testInput()
	in.NetNSPath = "/run/moat/networks/k/netns"
	spec := testSpec()
	out, _, err := Rewrite(spec, in)
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: in.NetNSPath}, {Type: specs.MountNamespace}}
	if !reflect.DeepEqual(out.Linux.Namespaces, want) {
		t.Errorf("namespaces %+v, want %+v", out.Linux.Namespaces, want)
	}
	if spec.Linux.Namespaces[1].Path != "" {
		t.Error("the input spec was modified")
	}
}

func TestRewriteSandboxOff(t *testing.T) {
	in := testInput()
	in.Config = policy.DefaultConfig()
	in.Config.Sandbox = false
	spec := testSpec()
	out, plan, err := Rewrite(spec, in)
	if err != nil || plan != nil {
		t.Fatalf("sandbox off: plan %v, err %v", plan, err)
	}
	if !reflect.DeepEqual(out, spec) || out == spec || out.Process == spec.Process {
		t.Error("sandbox off: want an equal copy")
	}
}

func TestRewriteRefusals(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*specs.Spec, *RewriteInput)
		is     error
		msg    string
	}{
		{"user namespace", func(s *specs.Spec, _ *RewriteInput) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}, ErrUserNamespace, "not yet supported"},
		{"uid mappings", func(s *specs.Spec, _ *RewriteInput) {
			s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		}, ErrUserNamespace, "not yet supported"},
		{"gid mappings", func(s *specs.Spec, _ *RewriteInput) {
			s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
		}, ErrUserNamespace, ""},
		{"notify listener path", func(s *specs.Spec, _ *RewriteInput) { s.Linux.Seccomp.ListenerPath = "/run/agent.sock" }, ErrSeccompNotify, "SCMP_ACT_NOTIFY"},
		{"notify action", func(s *specs.Spec, _ *RewriteInput) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"mkdir"}, Action: specs.ActNotify})
		}, ErrSeccompNotify, ""},
		{"notify default", func(s *specs.Spec, _ *RewriteInput) { s.Linux.Seccomp.DefaultAction = specs.ActNotify }, ErrSeccompNotify, ""},
		{"already rewritten", func(s *specs.Spec, _ *RewriteInput) {
			s.Process.Args = append([]string{"/.moat/init", "--"}, s.Process.Args...)
		}, ErrAlreadyRewritten, ""},
		{"reserved mount", func(s *specs.Spec, _ *RewriteInput) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/.moat/x", Type: "bind", Source: "/tmp"})
		}, nil, "reserves"},
		{"profile without program", func(_ *specs.Spec, in *RewriteInput) { in.ContainerSeccomp = nil }, nil, "no compiled program"},
		{"program without profile", func(s *specs.Spec, _ *RewriteInput) { s.Linux.Seccomp = nil }, nil, "has no profile"},
		{"no args", func(s *specs.Spec, _ *RewriteInput) { s.Process.Args = nil }, nil, "process.args is empty"},
		{"unknown capability", func(s *specs.Spec, _ *RewriteInput) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_FLY")
		}, nil, `unknown capability "CAP_FLY"`},
		{"no landlock plan", func(_ *specs.Spec, in *RewriteInput) { in.Landlock = nil }, nil, "no Landlock plan"},
		{"no init path", func(_ *specs.Spec, in *RewriteInput) { in.InitPath = "" }, nil, "host paths"},
		{"trust mount elsewhere", func(_ *specs.Spec, in *RewriteInput) {
			in.TrustMounts = []specs.Mount{{Destination: "/etc/ssl/ca.pem"}}
		}, nil, "not under /etc/moat-tls"},
		{"inner netns for a netns path", func(s *specs.Spec, in *RewriteInput) {
			s.Linux.Namespaces[1].Path = "/var/run/netns/cni-1"
			in.NetNSPath = "/run/moat/networks/k/netns"
		}, nil, "only replace a fresh network namespace"},
		{"inner netns without a netns", func(s *specs.Spec, in *RewriteInput) {
			s.Linux.Namespaces = s.Linux.Namespaces[:1]
			in.NetNSPath = "/run/moat/networks/k/netns"
		}, nil, "only replace a fresh network namespace"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec, in := testSpec(), testInput()
			c.mutate(spec, &in)
			out, plan, err := Rewrite(spec, in)
			if err == nil {
				t.Fatalf("accepted: %+v %+v", out, plan)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v, want %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q lacks %q", err, c.msg)
			}
		})
	}
}

func TestRewriteProxyEnv(t *testing.T) {
	in := testInput()
	out, plan, err := Rewrite(testSpec(), in)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range out.Process.Env {
		if strings.HasPrefix(e, "HTTP_PROXY=") {
			t.Errorf("no proxy, yet %s", e)
		}
	}
	in.Proxy = "http://10.200.0.5:3128"
	in.NetNS = &confine.NetNS{Inode: 4026532000}
	out, plan, err = Rewrite(testSpec(), in)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"HTTP_PROXY=http://10.200.0.5:3128", "https_proxy=http://10.200.0.5:3128", "grpc_proxy=http://10.200.0.5:3128",
		"NO_PROXY=127.0.0.1,localhost,::1", "NODE_USE_ENV_PROXY=1", "MOAT_SANDBOX=1",
	}
	for _, w := range want {
		if !slices.Contains(out.Process.Env, w) {
			t.Errorf("spec env lacks %s: %v", w, out.Process.Env)
		}
		// exec'd processes get their environment from the engine, so the
		// plan carries the same variables.
		if !slices.Contains(plan.Env, w) {
			t.Errorf("plan env lacks %s: %v", w, plan.Env)
		}
	}
	if plan.NetNS == nil || plan.NetNS.FD != 0 || plan.NetNS.Inode != 4026532000 {
		t.Errorf("plan netns %+v", plan.NetNS)
	}
}
