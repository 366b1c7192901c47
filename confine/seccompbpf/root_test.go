//go:build cgo && linux

package seccompbpf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/confine"
)

// TestRootStackedFilters runs moat-init with the container's compiled
// profile and moat's filter, without no_new_privs (the loads rely on
// CAP_SYS_ADMIN before the identity drop), as an unprivileged user.
func TestRootStackedFilters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	initBin := filepath.Join(dir, "moat-init")
	build := exec.Command("go", "build", "-o", initBin, "../../cmd/moat-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build moat-init: %v\n%s", err, out)
	}
	container, err := Compile(&specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: uintp(uint(unix.ENOTSUP))},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	moat, err := confine.MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	plan := &confine.Plan{
		Version:  confine.PlanVersion,
		Seccomp:  []confine.SeccompProgram{*container, moat},
		Identity: confine.Identity{UID: 61000, GID: 61000},
	}
	planFile := filepath.Join(dir, "plan.json")
	if err := confine.WritePlan(planFile, plan); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(initBin, append([]string{"--"}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "MOAT_PLAN=" + planFile}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("mkdir", filepath.Join(dir, "x")); err == nil || !strings.Contains(out, "Operation not supported") {
		t.Errorf("mkdir under the container's profile: %v %q", err, out)
	}
	if out, err := run("unshare", "-U", "true"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("unshare -U under moat's filter: %v %q", err, out)
	}
	out, err := run("grep", "-E", "^(Seccomp_filters|NoNewPrivs|Uid)", "/proc/self/status")
	if err != nil || !strings.Contains(out, "Seccomp_filters:\t2") || !strings.Contains(out, "NoNewPrivs:\t0") || !strings.Contains(out, "Uid:\t61000") {
		t.Errorf("status: %v %q", err, out)
	}
}
