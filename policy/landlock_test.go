package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ruleString renders a rule as "PATH ACCESS [optional] ORIGIN".
func ruleString(r PlanRule) string {
	s := r.Path + " " + r.Access
	if r.Optional {
		s += " optional"
	}
	return s + " " + r.Origin
}

func planRules(plan *Plan) map[string]string {
	m := make(map[string]string, len(plan.Rules))
	for _, r := range plan.Rules {
		m[r.Path] = ruleString(r)
	}
	return m
}

func fsPolicy(ro, rw []string, workdir bool) *Policy {
	return &Policy{Version: 1, Filesystem: &Filesystem{IncludeWorkdir: workdir, ReadOnly: ro, ReadWrite: rw}}
}

func procSpec(cwd string, args ...string) *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Cwd: cwd, Args: args}}
}

func TestLandlockPlanRules(t *testing.T) {
	tests := []struct {
		name   string
		policy *Policy
		spec   *specs.Spec
		opts   PlanOptions
		want   []string // rules that must be present, exactly
		absent []string // paths that must not be in the plan
		warn   []string // substrings of findings, in order
	}{
		{
			name:   "policy read_only and read_write",
			policy: fsPolicy([]string{"/data"}, []string{"/work"}, false),
			want:   []string{"/data ro policy", "/work rw policy"},
		},
		{
			name:   "policy paths are cleaned",
			policy: fsPolicy([]string{"/data/", "/x//y/."}, []string{"/work/../scratch"}, false),
			want:   []string{"/data ro policy", "/x/y ro policy", "/scratch rw policy"},
			absent: []string{"/data/", "/work"},
		},
		{
			name:   "no filesystem section gives the baseline",
			policy: &Policy{Version: 1},
			want: []string{
				"/usr ro optional baseline", "/lib ro optional baseline", "/etc ro optional baseline",
				"/app ro optional baseline", "/var/log ro optional baseline", "/proc ro optional baseline",
				"/sandbox rw optional baseline", "/tmp rw optional baseline",
				"/dev/urandom rw optional device",
			},
		},
		{
			name: "nil policy gives the baseline",
			want: []string{"/usr ro optional baseline", "/tmp rw optional baseline"},
		},
		{
			name:   "baseline fills what a partial policy omits",
			policy: fsPolicy([]string{"/usr"}, nil, false),
			want:   []string{"/usr ro policy", "/lib ro optional baseline", "/sandbox rw optional baseline"},
		},
		{
			name:   "bug 905: /sandbox listed read-only stays read-only",
			policy: fsPolicy([]string{"/sandbox"}, nil, false),
			want:   []string{"/sandbox ro policy", "/tmp rw optional baseline"},
		},
		{
			name:   "baseline never narrows a policy read-write path",
			policy: fsPolicy(nil, []string{"/usr", "/etc"}, false),
			want:   []string{"/usr rw policy", "/etc rw policy"},
		},
		{
			name:   "policy lists a path both ways: read-write with a warning",
			policy: fsPolicy([]string{"/data"}, []string{"/data"}, false),
			want:   []string{"/data rw policy"},
			warn:   []string{"/data: listed both read_only and read_write"},
		},
		{
			name:   "include_workdir adds the cwd read-write",
			policy: fsPolicy(nil, nil, true),
			spec:   procSpec("/work/project"),
			want:   []string{"/work/project rw optional workdir"},
		},
		{
			name:   "include_workdir false leaves the cwd out",
			policy: fsPolicy(nil, nil, false),
			spec:   procSpec("/work/project"),
			absent: []string{"/work/project"},
		},
		{
			name:   "include_workdir cwd is cleaned",
			policy: fsPolicy(nil, nil, true),
			spec:   procSpec("/work/project/"),
			want:   []string{"/work/project rw optional workdir"},
		},
		{
			name:   "include_workdir never widens a read-only cwd",
			policy: fsPolicy([]string{"/work"}, nil, true),
			spec:   procSpec("/work"),
			want:   []string{"/work ro policy"},
			warn:   []string{"/work: include_workdir: the policy lists the working directory read-only"},
		},
		{
			name:   "include_workdir with cwd / adds nothing",
			policy: fsPolicy(nil, nil, true),
			spec:   procSpec("/"),
			absent: []string{"/"},
			warn:   []string{"/: include_workdir: the working directory is /"},
		},
		{
			name:   "include_workdir with cwd in /sandbox that the policy made read-only",
			policy: fsPolicy([]string{"/sandbox"}, nil, true),
			spec:   procSpec("/sandbox"),
			want:   []string{"/sandbox ro policy"},
			warn:   []string{"/sandbox: include_workdir: the policy lists the working directory read-only"},
		},
		{
			name:   "include_workdir with a relative cwd",
			policy: fsPolicy(nil, nil, true),
			spec:   procSpec("work"),
			absent: []string{"work", "/work"},
			warn:   []string{"work: include_workdir: the working directory is not absolute"},
		},
		{
			name:   "include_workdir without a process",
			policy: fsPolicy(nil, nil, true),
			warn:   []string{"include_workdir: the spec has no working directory"},
		},
		{
			name:   "include_workdir under a read-write policy path",
			policy: fsPolicy(nil, []string{"/work"}, true),
			spec:   procSpec("/work"),
			want:   []string{"/work rw policy"},
		},
		{
			name: "absolute entrypoint is read-only",
			spec: procSpec("/", "/opt/agent/bin/agent", "--flag"),
			want: []string{"/opt/agent/bin/agent ro optional entrypoint"},
		},
		{
			name:   "relative entrypoint adds no rule",
			spec:   procSpec("/", "sh", "-c", "true"),
			absent: []string{"sh", "/sh"},
		},
		{
			name:   "entrypoint under a read-write path adds a nested rule",
			policy: fsPolicy(nil, []string{"/sandbox"}, false),
			spec:   procSpec("/", "/sandbox/run.sh"),
			want:   []string{"/sandbox rw policy", "/sandbox/run.sh ro optional entrypoint"},
		},
		{
			name:   "entrypoint listed read-write by the policy stays read-write",
			policy: fsPolicy(nil, []string{"/sandbox/run.sh"}, false),
			spec:   procSpec("/", "/sandbox/run.sh"),
			want:   []string{"/sandbox/run.sh rw policy"},
		},
		{
			name: "system directories and device nodes",
			want: []string{
				"/bin ro optional system", "/sbin ro optional system", "/lib64 ro optional system",
				"/dev/null rw optional device", "/dev/zero rw optional device", "/dev/full rw optional device",
				"/dev/tty rw optional device", "/dev/random rw optional device", "/dev/urandom rw optional device",
				"/dev/pts rw optional device", "/dev/shm rw optional device",
			},
		},
		{
			name:   "policy read-only device stays read-only",
			policy: fsPolicy([]string{"/dev/urandom"}, []string{"/dev/null"}, false),
			want:   []string{"/dev/urandom ro policy", "/dev/null rw policy"},
		},
		{
			name: "mounts with their own flags",
			spec: &specs.Spec{Mounts: []specs.Mount{
				{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "rw"}},
				{Destination: "/models", Type: "bind", Source: "/srv/models", Options: []string{"rbind", "ro"}},
				{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Type: "bind", Options: []string{"rbind", "rro", "nosuid"}},
				{Destination: "/cache", Type: "tmpfs", Source: "tmpfs"},
				{Destination: "relative", Type: "bind", Options: []string{"ro"}},
			}},
			want: []string{
				"/data rw optional mount", "/models ro optional mount",
				"/var/run/secrets/kubernetes.io/serviceaccount ro optional mount",
				"/cache rw optional mount", "/relative ro optional mount",
			},
		},
		{
			name: "kernel mounts and moat's own are skipped",
			spec: &specs.Spec{Mounts: []specs.Mount{
				{Destination: "/proc", Type: "proc", Source: "proc"},
				{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755"}},
				{Destination: "/dev/pts", Type: "devpts", Source: "devpts"},
				{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue"},
				{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"ro"}},
				{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro"}},
				{Destination: "/run/cg", Type: "cgroup2", Source: "cgroup"},
				{Destination: "/proc/driver/nvidia", Type: "bind", Options: []string{"ro"}},
				{Destination: "/.moat/init", Type: "bind", Options: []string{"ro"}},
			}},
			want:   []string{"/proc ro optional baseline", "/dev/pts rw optional device"},
			absent: []string{"/dev", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/run/cg", "/proc/driver/nvidia", "/.moat/init", "/.moat"},
		},
		{
			name:   "a read-write mount never widens a policy read-only path",
			policy: fsPolicy([]string{"/data"}, nil, false),
			spec:   &specs.Spec{Mounts: []specs.Mount{{Destination: "/data", Type: "bind", Options: []string{"rw"}}}},
			want:   []string{"/data ro policy"},
			warn:   []string{"/data: the spec mounts it read-write but the policy lists it read_only"},
		},
		{
			name:   "a read-only mount under a policy read-write path is kept",
			policy: fsPolicy(nil, []string{"/sandbox"}, false),
			spec:   &specs.Spec{Mounts: []specs.Mount{{Destination: "/sandbox/ref", Type: "bind", Options: []string{"ro"}}}},
			want:   []string{"/sandbox rw policy", "/sandbox/ref ro optional mount"},
		},
		{
			name:   "a read-only mount at a policy read-write path adds no duplicate",
			policy: fsPolicy(nil, []string{"/sandbox"}, false),
			spec:   &specs.Spec{Mounts: []specs.Mount{{Destination: "/sandbox", Type: "bind", Options: []string{"ro"}}}},
			want:   []string{"/sandbox rw policy"},
		},
		{
			name:   "a read-write mount over a baseline read-only path",
			policy: &Policy{Version: 1},
			spec:   &specs.Spec{Mounts: []specs.Mount{{Destination: "/app", Type: "bind", Options: []string{"rbind"}}}},
			want:   []string{"/app rw optional mount"},
		},
		{
			name: "engine resolver files stay read-only",
			spec: &specs.Spec{Mounts: []specs.Mount{
				{Destination: "/etc/hosts", Type: "bind", Options: []string{"rbind", "rprivate"}},
				{Destination: "/etc/resolv.conf", Type: "bind", Options: []string{"rbind", "rprivate"}},
				{Destination: "/etc/hostname", Type: "bind", Options: []string{"rbind", "ro"}},
			}},
			want: []string{"/etc/hosts ro optional mount", "/etc/resolv.conf ro optional mount", "/etc/hostname ro optional mount"},
		},
		{
			name:   "the policy may still make a resolver file writable",
			policy: fsPolicy(nil, []string{"/etc/hosts"}, false),
			want:   []string{"/etc/hosts rw policy"},
		},
		{
			name: "spec devices are read-write",
			spec: &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c"}}}},
			want: []string{"/dev/fuse rw optional device"},
		},
		{
			name: "GPU from the spec's devices",
			spec: &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{
				{Path: "/dev/nvidiactl"}, {Path: "/dev/nvidia0"}, {Path: "/dev/nvidia12"}, {Path: "/dev/nvidia-caps/nvidia-cap1"},
			}}},
			want: []string{
				"/dev/nvidiactl rw optional gpu", "/dev/nvidia-uvm rw optional gpu", "/dev/nvidia-uvm-tools rw optional gpu",
				"/dev/nvidia-modeset rw optional gpu", "/dev/nvidia0 rw optional gpu", "/dev/nvidia12 rw optional gpu",
				"/dev/nvidia-caps/nvidia-cap1 rw optional device",
				"/run/nvidia-persistenced ro optional gpu", "/proc rw optional gpu",
			},
		},
		{
			name: "GPU from options",
			opts: PlanOptions{GPU: true},
			want: []string{"/dev/nvidiactl rw optional gpu", "/run/nvidia-persistenced ro optional gpu", "/proc rw optional gpu"},
		},
		{
			name: "GPU from the NVIDIA hook",
			spec: &specs.Spec{Hooks: &specs.Hooks{Prestart: []specs.Hook{{Path: "/usr/bin/nvidia-container-runtime-hook", Args: []string{"nvidia-container-runtime-hook", "prestart"}}}}},
			want: []string{"/dev/nvidiactl rw optional gpu", "/proc rw optional gpu"},
		},
		{
			name:   "no GPU: no NVIDIA paths and /proc read-only",
			spec:   &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{{Path: "/dev/fuse"}}}, Hooks: &specs.Hooks{Prestart: []specs.Hook{{Path: "/usr/bin/other-hook"}}}},
			want:   []string{"/proc ro optional baseline"},
			absent: []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/run/nvidia-persistenced"},
		},
		{
			name:   "GPU makes a policy read-only /proc read-write, with a warning",
			policy: fsPolicy([]string{"/proc", "/usr"}, nil, false),
			opts:   PlanOptions{GPU: true},
			want:   []string{"/proc rw policy", "/usr ro policy"},
			warn:   []string{"/proc: the policy lists /proc read-only; it is made read-write"},
		},
		{
			name:   "GPU never widens other policy read-only paths",
			policy: fsPolicy([]string{"/dev/nvidiactl"}, nil, false),
			opts:   PlanOptions{GPU: true},
			want:   []string{"/dev/nvidiactl ro policy"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, findings, err := LandlockPlan(tt.policy, tt.spec, tt.opts)
			if err != nil {
				t.Fatalf("LandlockPlan: %v", err)
			}
			got := planRules(plan)
			for _, w := range tt.want {
				path := w[:strings.IndexByte(w, ' ')]
				if got[path] != w {
					t.Errorf("rule %s = %q, want %q", path, got[path], w)
				}
			}
			for _, path := range tt.absent {
				if r, ok := got[path]; ok {
					t.Errorf("unexpected rule %q", r)
				}
			}
			if len(findings) != len(tt.warn) {
				t.Fatalf("findings = %v, want %d matching %q", findings, len(tt.warn), tt.warn)
			}
			for i, w := range tt.warn {
				if !strings.Contains(findings[i].String(), w) {
					t.Errorf("finding %d = %q, want it to contain %q", i, findings[i], w)
				}
			}
		})
	}
}

func TestLandlockPlanFull(t *testing.T) {
	p := fsPolicy([]string{"/usr", "/sandbox"}, []string{"/tmp", "/data"}, true)
	p.Landlock.Compatibility = HardRequirement
	spec := &specs.Spec{
		Process: &specs.Process{Cwd: "/work", Args: []string{"/usr/bin/python3", "agent.py"}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc"},
			{Destination: "/data", Type: "bind", Options: []string{"ro"}},
		},
	}
	plan, findings, err := LandlockPlan(p, spec, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 0 {
		t.Errorf("findings: %v", findings)
	}
	want := []string{
		"/app ro optional baseline",
		"/bin ro optional system",
		"/data rw policy",
		"/dev/full rw optional device",
		"/dev/null rw optional device",
		"/dev/pts rw optional device",
		"/dev/random rw optional device",
		"/dev/shm rw optional device",
		"/dev/tty rw optional device",
		"/dev/urandom rw optional device",
		"/dev/zero rw optional device",
		"/etc ro optional baseline",
		"/lib ro optional baseline",
		"/lib64 ro optional system",
		"/proc ro optional baseline",
		"/sandbox ro policy",
		"/sbin ro optional system",
		"/tmp rw policy",
		"/usr ro policy",
		"/usr/bin/python3 ro optional entrypoint",
		"/var/log ro optional baseline",
		"/work rw optional workdir",
	}
	var got []string
	for _, r := range plan.Rules {
		got = append(got, ruleString(r))
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n got %q\nwant %q", got, want)
	}
	if plan.Compatibility != HardRequirement || !plan.EntrypointInterpreter || plan.GPUDevices {
		t.Errorf("plan = %+v", plan)
	}
}

func TestLandlockPlanSortedAndUnique(t *testing.T) {
	p := fsPolicy([]string{"/z", "/a", "/m", "/a/"}, []string{"/tmp", "/tmp/", "/b"}, true)
	spec := &specs.Spec{
		Process: &specs.Process{Cwd: "/tmp", Args: []string{"/bin/sh"}},
		Mounts: []specs.Mount{
			{Destination: "/tmp", Type: "tmpfs"},
			{Destination: "/b", Type: "bind", Options: []string{"ro"}},
			{Destination: "/b", Type: "bind"},
		},
		Linux: &specs.Linux{Devices: []specs.LinuxDevice{{Path: "/dev/null"}, {Path: "/dev/nvidiactl"}, {Path: "/dev/nvidia0"}}},
	}
	var first []byte
	for i := 0; i < 20; i++ {
		plan, findings, err := LandlockPlan(p, spec, PlanOptions{GPU: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.IsSortedFunc(plan.Rules, func(a, b PlanRule) int { return strings.Compare(a.Path, b.Path) }) {
			t.Fatalf("rules not sorted: %v", plan.Rules)
		}
		for j := 1; j < len(plan.Rules); j++ {
			if plan.Rules[j].Path == plan.Rules[j-1].Path {
				t.Fatalf("duplicate path %s", plan.Rules[j].Path)
			}
		}
		data, err := json.Marshal(struct {
			P *Plan
			F []Finding
		}{plan, findings})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = data
		} else if string(data) != string(first) {
			t.Fatalf("plan differs between runs:\n%s\n%s", first, data)
		}
	}
}

func TestLandlockPlanCompatibility(t *testing.T) {
	for _, tt := range []struct {
		policy *Policy
		want   string
	}{
		{nil, BestEffort},
		{&Policy{Version: 1}, BestEffort},
		{&Policy{Version: 1, Landlock: Landlock{Compatibility: BestEffort}}, BestEffort},
		{&Policy{Version: 1, Landlock: Landlock{Compatibility: HardRequirement}}, HardRequirement},
	} {
		plan, _, err := LandlockPlan(tt.policy, nil, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if plan.Compatibility != tt.want {
			t.Errorf("compatibility = %q, want %q", plan.Compatibility, tt.want)
		}
		if plan.EntrypointInterpreter {
			t.Errorf("entrypoint_interpreter set without a process")
		}
	}
}

func TestLandlockPlanBadPolicyPaths(t *testing.T) {
	for _, tt := range []struct {
		policy *Policy
		want   string
	}{
		{fsPolicy([]string{"usr"}, nil, false), `path "usr" is not absolute`},
		{fsPolicy(nil, []string{""}, false), `path "" is not absolute`},
		{fsPolicy(nil, []string{"/a\x00b"}, false), `contains a NUL byte`},
	} {
		_, _, err := LandlockPlan(tt.policy, nil, PlanOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want %q", err, tt.want)
		}
	}
}

func TestPlanJSON(t *testing.T) {
	plan := &Plan{
		Compatibility:         BestEffort,
		Rules:                 []PlanRule{{Path: "/tmp", Access: AccessRW, Optional: true, Origin: OriginBaseline}, {Path: "/usr", Access: AccessRO, Origin: OriginPolicy}},
		EntrypointInterpreter: true,
	}
	data, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"compatibility":"best_effort","rules":[{"path":"/tmp","access":"rw","optional":true,"origin":"baseline"},{"path":"/usr","access":"ro","origin":"policy"}],"entrypoint_interpreter":true}`
	if string(data) != want {
		t.Errorf("json:\n got %s\nwant %s", data, want)
	}
	var back Plan
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Rules, plan.Rules) || back.Compatibility != plan.Compatibility || !back.EntrypointInterpreter {
		t.Errorf("round trip: %+v", back)
	}
}
