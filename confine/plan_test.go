package confine

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatsandbox/moat/policy/plan"
)

func TestPlanRoundTripAndValidate(t *testing.T) {
	moat, err := MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	p := &Plan{
		Version: PlanVersion, Mode: ModeExec,
		NetNS:        &NetNS{FD: 3, Inode: 4026532000},
		Landlock:     &plan.Plan{Compatibility: plan.HardRequirement, Rules: []plan.PlanRule{{Path: "/usr", Access: plan.AccessRO}}},
		Seccomp:      []SeccompProgram{moat},
		Identity:     Identity{UID: 1000, GID: 1000, AdditionalGids: []uint32{44}, Username: "sandbox", Home: "/home/sandbox"},
		Capabilities: &Capabilities{Bounding: []string{"CAP_NET_BIND_SERVICE"}},
		Env:          []string{"MOAT_SANDBOX=1"},
	}
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := WritePlan(path, p); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPlan(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Seccomp[0].Instructions) != string(moat.Instructions) || got.NetNS.Inode != p.NetNS.Inode || got.Identity.Home != "/home/sandbox" {
		t.Errorf("round trip: %+v", got)
	}
	if _, err := os.Stat(path + ".tmp"); err == nil {
		t.Error("temporary file left behind")
	}

	for _, c := range []struct {
		name, json, err string
	}{
		{"version", `{"version":2,"identity":{"uid":0,"gid":0}}`, "plan version 2"},
		{"unknown field", `{"version":1,"identity":{"uid":0,"gid":0},"future":true}`, "unknown field"},
		{"mode", `{"version":1,"mode":"fork","identity":{"uid":0,"gid":0}}`, `unknown mode "fork"`},
		{"capability", `{"version":1,"identity":{"uid":0,"gid":0},"capabilities":{"ambient":["CAP_FLY"]}}`, `unknown capability "CAP_FLY"`},
		{"seccomp", `{"version":1,"identity":{"uid":0,"gid":0},"seccomp":[{"name":"x","instructions":"AAAA"}]}`, "not 1 to 4096"},
		{"netns fd", `{"version":1,"identity":{"uid":0,"gid":0},"netns":{"fd":1,"inode":5}}`, "fd above 2"},
		{"access", `{"version":1,"identity":{"uid":0,"gid":0},"landlock":{"compatibility":"best_effort","rules":[{"path":"/x","access":"rwx"}]}}`, `unknown access "rwx"`},
		{"env", `{"version":1,"identity":{"uid":0,"gid":0},"env":["NOEQUALS"]}`, "not KEY=VALUE"},
	} {
		if _, err := ParsePlan([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.err)
		}
	}
}

func TestMergeEnvAndLookPath(t *testing.T) {
	got := MergeEnv([]string{"PATH=/bin", "HOME=/root", "TERM=xterm"}, []string{"HOME=/home/sandbox", "MOAT_SANDBOX=1"})
	if want := []string{"PATH=/bin", "TERM=xterm", "HOME=/home/sandbox", "MOAT_SANDBOX=1"}; !slices.Equal(got, want) {
		t.Errorf("MergeEnv: %v, want %v", got, want)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	noexec := filepath.Join(dir, "data")
	for p, mode := range map[string]os.FileMode{exe: 0o755, noexec: 0o644} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=/nonexistent:" + dir}
	if p, err := LookPath("tool", env); err != nil || p != exe {
		t.Errorf("LookPath tool: %q %v", p, err)
	}
	if _, err := LookPath("missing", env); ExitCode(err) != ExitNotFound {
		t.Errorf("LookPath missing: %v", err)
	}
	if _, err := LookPath("data", env); ExitCode(err) != ExitCannotExec {
		t.Errorf("LookPath non-executable: %v", err)
	}
	if _, err := LookPath(dir, env); ExitCode(err) != ExitCannotExec {
		t.Errorf("LookPath directory: %v", err)
	}
}

func TestCaps(t *testing.T) {
	m, err := CapMask([]string{"CAP_CHOWN", "net_bind_service", "CAP_CHECKPOINT_RESTORE"})
	if err != nil || m != 1|1<<10|1<<40 {
		t.Fatalf("CapMask: %#x %v", m, err)
	}
	if got := CapNames(m); !slices.Equal(got, []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_CHECKPOINT_RESTORE"}) {
		t.Errorf("CapNames: %v", got)
	}
	if _, err := CapNumber("CAP_FLY"); err == nil {
		t.Error("unknown capability accepted")
	}
}
