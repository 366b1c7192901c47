package confine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/policy/plan"
)

// The root tests build cmd/moat-init and testdata/helper (CGO_ENABLED=0) and
// run moat-init directly on the host with a plan file, as a child process.
// They need root; without it they skip.

const (
	testUID = 61000 // no passwd entry needed
	testGID = 61001
)

var rootEnv struct {
	dir    string // world-traversable scratch dir, removed by TestMain
	init   string
	helper string
	err    error
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && runtime.GOOS == "linux" {
		rootEnv.err = buildRootEnv()
	}
	code := m.Run()
	if rootEnv.dir != "" {
		_ = os.RemoveAll(rootEnv.dir)
	}
	os.Exit(code)
}

func buildRootEnv() error {
	dir, err := os.MkdirTemp("", "moat-confine-")
	if err != nil {
		return err
	}
	rootEnv.dir = dir
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return err
	}
	rootEnv.init = filepath.Join(bin, "moat-init")
	rootEnv.helper = filepath.Join(bin, "helper")
	for _, b := range []struct{ out, pkg string }{
		{rootEnv.init, "../cmd/moat-init"},
		{rootEnv.helper, "./testdata/helper"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return nil
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (run go test as root to load Landlock and seccomp for real)")
	}
	if rootEnv.err != nil {
		t.Fatalf("build test binaries: %v", rootEnv.err)
	}
	if abi, err := LandlockABI(); err != nil || abi < 1 {
		t.Skipf("skipping: kernel has no Landlock (%v)", err)
	}
}

// scratch makes a directory under the shared scratch dir, owned by uid:gid.
func scratch(t *testing.T, name string, uid, gid int) string {
	t.Helper()
	d := filepath.Join(rootEnv.dir, t.Name(), name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(d, uid, gid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(d)) })
	return d
}

// basePlan runs as the test user with nothing but system paths readable.
func basePlan(t *testing.T, extra ...plan.PlanRule) *Plan {
	t.Helper()
	moat, err := MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	rules := []plan.PlanRule{
		{Path: "/usr", Access: plan.AccessRO}, {Path: "/etc", Access: plan.AccessRO},
		{Path: "/proc", Access: plan.AccessRO},
		{Path: "/bin", Access: plan.AccessRO, Optional: true}, {Path: "/lib", Access: plan.AccessRO, Optional: true},
		{Path: "/lib64", Access: plan.AccessRO, Optional: true}, {Path: "/sbin", Access: plan.AccessRO, Optional: true},
		{Path: "/dev/null", Access: plan.AccessRW},
		{Path: filepath.Dir(rootEnv.helper), Access: plan.AccessRO},
	}
	return &Plan{
		Version:  PlanVersion,
		Mode:     ModeReap,
		Landlock: &plan.Plan{Compatibility: plan.BestEffort, Rules: append(rules, extra...)},
		Seccomp:  []SeccompProgram{moat},
		Identity: Identity{UID: testUID, GID: testGID},
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// runInit runs moat-init with plan and argv; setup may adjust the command.
func runInit(t *testing.T, plan *Plan, argv []string, setup func(*exec.Cmd)) result {
	t.Helper()
	cmd := startInit(t, plan, argv, setup)
	err := cmd.Wait()
	return finish(t, cmd, err)
}

func startInit(t *testing.T, plan *Plan, argv []string, setup func(*exec.Cmd)) *exec.Cmd {
	t.Helper()
	data, err := plan.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(planFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rootEnv.init, append([]string{"--"}, argv...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "MOAT_PLAN=" + planFile}
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
	if setup != nil {
		setup(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func finish(t *testing.T, cmd *exec.Cmd, err error) result {
	t.Helper()
	r := result{stdout: fmt.Sprint(cmd.Stdout), stderr: fmt.Sprint(cmd.Stderr)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
	default:
		t.Fatalf("run moat-init: %v", err)
	}
	return r
}

// helperResult runs the helper under plan and returns its one-line answer.
func helperResult(t *testing.T, plan *Plan, args ...string) string {
	t.Helper()
	r := runInit(t, plan, append([]string{rootEnv.helper}, args...), nil)
	if r.code != 0 {
		t.Fatalf("helper %v: %v", args, r)
	}
	return strings.TrimSpace(r.stdout)
}

func TestRootLandlock(t *testing.T) {
	requireRoot(t)
	inBothModes(t, func(t *testing.T, mode string) {
		owned := scratch(t, "owned-unlisted", testUID, testGID)
		ro := scratch(t, "owned-readonly", testUID, testGID)
		rw := scratch(t, "readwrite", testUID, testGID)
		outside := scratch(t, "outside", 0, 0)
		secret := filepath.Join(outside, "world-readable")
		if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ro, "file"), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}

		// Without Landlock the test user can write where it owns and read
		// the world-readable file: the denials below are Landlock's.
		open := basePlan(t)
		open.Mode = mode
		open.Landlock = nil
		for _, c := range [][]string{{"write", owned + "/x"}, {"write", ro + "/x"}, {"read", secret}} {
			if got := helperResult(t, open, c...); got != "OK" {
				t.Fatalf("without Landlock, %v: %s", c, got)
			}
		}
		_ = os.Remove(owned + "/x")
		_ = os.Remove(ro + "/x")

		plan := basePlan(t,
			plan.PlanRule{Path: ro, Access: plan.AccessRO},
			plan.PlanRule{Path: rw, Access: plan.AccessRW},
		)
		plan.Mode = mode
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"write", owned + "/x"}, "EACCES"},
			{[]string{"write", ro + "/x"}, "EACCES"},
			{[]string{"read", ro + "/file"}, "OK"},
			{[]string{"write", rw + "/x"}, "OK"},
			{[]string{"read", rw + "/x"}, "OK"},
			{[]string{"read", secret}, "EACCES"},
			{[]string{"write", "/dev/null"}, "OK"},
			{[]string{"write", "/etc/moat-test-should-not-exist"}, "EACCES"},
		} {
			if got := helperResult(t, plan, c.args...); got != c.want {
				t.Errorf("%v: got %s, want %s", c.args, got, c.want)
			}
		}
		if _, err := os.Stat(owned + "/x"); err == nil {
			t.Error("a file was created in the unlisted directory")
		}
	})
}

// inBothModes runs test as subtests "reap" and "exec": moat-init confines
// every thread in one and only the thread that execs in the other.
func inBothModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{ModeReap, ModeExec} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

func TestRootLandlockModes(t *testing.T) {
	requireRoot(t)
	missing := "/nonexistent-moat-confine-test"
	policyRule := plan.PlanRule{Path: missing, Access: plan.AccessRO, Origin: plan.OriginPolicy}

	best := basePlan(t, policyRule)
	r := runInit(t, best, []string{rootEnv.helper, "read", "/etc/hostname"}, nil)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "OK" {
		t.Fatalf("best_effort with a missing path: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "moat-init: ") || !strings.Contains(lines[0], "skipped read_only path "+missing) {
		t.Errorf("best_effort finding: want one line naming %s, got %q", missing, r.stderr)
	}

	hard := basePlan(t, policyRule)
	hard.Landlock.Compatibility = plan.HardRequirement
	r = runInit(t, hard, []string{rootEnv.helper, "read", "/etc/hostname"}, nil)
	if r.code != ExitConfineFailed || r.stdout != "" || !strings.Contains(r.stderr, "hard_requirement") || !strings.Contains(r.stderr, missing) {
		t.Errorf("hard_requirement with a missing path: want exit 1 before the program runs, got %v", r)
	}

	// Derived (optional) rules are skipped silently, even under hard_requirement.
	quiet := basePlan(t, plan.PlanRule{Path: missing, Access: plan.AccessRW, Optional: true, Origin: plan.OriginBaseline})
	quiet.Landlock.Compatibility = plan.HardRequirement
	r = runInit(t, quiet, []string{rootEnv.helper, "read", "/etc/hostname"}, nil)
	if r.code != 0 || r.stderr != "" {
		t.Errorf("hard_requirement with a missing optional path: %v", r)
	}
}

func TestRootSeccomp(t *testing.T) {
	requireRoot(t)
	inBothModes(t, func(t *testing.T, mode string) {
		for _, nnp := range []bool{false, true} {
			t.Run(fmt.Sprintf("no_new_privs=%v", nnp), func(t *testing.T) {
				plan := basePlan(t)
				plan.Mode = mode
				plan.NoNewPrivileges = nnp
				for _, c := range []struct {
					args []string
					want string
				}{
					{[]string{"socket", "17", "3", "768"}, "EPERM"}, // AF_PACKET, SOCK_RAW, ETH_P_ALL
					{[]string{"socket", "40", "1", "0"}, "EPERM"},   // AF_VSOCK
					{[]string{"socket", "16", "3", "9"}, "EPERM"},   // AF_NETLINK, NETLINK_AUDIT
					{[]string{"socket", "16", "3", "0"}, "OK"},      // AF_NETLINK, NETLINK_ROUTE
					{[]string{"socket", "2", "1", "0"}, "OK"},       // AF_INET stream
					{[]string{"socket", "10", "2", "0"}, "OK"},      // AF_INET6 datagram
					{[]string{"ptrace"}, "EPERM"},
					{[]string{"clone3"}, "ENOSYS"},
					{[]string{"memfd"}, "OK"},
					{[]string{"seccomp-filter"}, "EPERM"},
					{[]string{"prctl-seccomp"}, "EPERM"},
					{[]string{"setuid0"}, "EPERM"},
				} {
					if got := helperResult(t, plan, c.args...); got != c.want {
						t.Errorf("%v: got %s, want %s", c.args, got, c.want)
					}
				}
				r := runInit(t, plan, []string{"unshare", "-U", "true"}, nil)
				if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
					t.Errorf("unshare -U true: want EPERM, got %v", r)
				}
			})
		}
	})
}

// TestRootSeccompBindsRoot shows the denials come from the filter: root with
// CAP_SYS_ADMIN could otherwise do all of these.
func TestRootSeccompBindsRoot(t *testing.T) {
	requireRoot(t)
	target := scratch(t, "mnt", 0, 0)
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	plan := basePlan(t)
	plan.Landlock = nil // seccomp alone (Landlock forbids mount too)
	plan.Identity = Identity{}
	all := &Capabilities{Bounding: capNames[:], Effective: capNames[:], Permitted: capNames[:]}
	all.Bounding = withoutCap(all.Bounding, "CAP_SYS_RESOURCE")
	all.Effective, all.Permitted = all.Bounding, all.Bounding
	plan.Capabilities = all
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"unshare-net"}, "EPERM"},
		{[]string{"mount", target}, "EPERM"},
		{[]string{"bpf"}, "EPERM"},
		{[]string{"ptrace"}, "EPERM"},
	} {
		if got := helperResult(t, plan, c.args...); got != c.want {
			t.Errorf("root %v: got %s, want %s", c.args, got, c.want)
		}
	}
	r := runInit(t, plan, []string{"unshare", "-U", "true"}, nil)
	if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("root unshare -U true: want EPERM, got %v", r)
	}
}

func withoutCap(names []string, drop string) []string {
	var out []string
	for _, n := range names {
		if n != drop && capAvailable(n) {
			out = append(out, n)
		}
	}
	return out
}

// capAvailable reports whether the test process's bounding set has the
// capability (CAP_SYS_RESOURCE is missing on some CI machines).
func capAvailable(name string) bool {
	n, err := CapNumber(name)
	if err != nil {
		return false
	}
	v, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0)
	return err == nil && v == 1
}

func TestRootIdentity(t *testing.T) {
	requireRoot(t)
	inBothModes(t, func(t *testing.T, mode string) {
		plan := basePlan(t)
		plan.Mode = mode
		plan.Identity = Identity{UID: testUID, GID: testGID, AdditionalGids: []uint32{61002, 61003}}
		plan.Capabilities = &Capabilities{
			Bounding:    []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"},
			Effective:   []string{"CAP_NET_BIND_SERVICE"},
			Permitted:   []string{"CAP_NET_BIND_SERVICE"},
			Inheritable: []string{"CAP_NET_BIND_SERVICE"},
			Ambient:     []string{"CAP_NET_BIND_SERVICE"},
		}
		plan.NoNewPrivileges = true
		for _, c := range []struct{ flag, want string }{{"-u", "61000"}, {"-g", "61001"}, {"-G", "61001 61002 61003"}} {
			r := runInit(t, plan, []string{"id", c.flag}, nil)
			if r.code != 0 || strings.TrimSpace(r.stdout) != c.want {
				t.Errorf("id %s: want %s, got %v", c.flag, c.want, r)
			}
		}
		status := helperResult(t, plan, "status")
		for _, want := range []string{
			"Uid:\t61000\t61000\t61000\t61000", "Gid:\t61001\t61001\t61001\t61001",
			"CapInh:\t0000000000000400", "CapPrm:\t0000000000000400", "CapEff:\t0000000000000400",
			"CapBnd:\t0000000000000401", "CapAmb:\t0000000000000400",
			"NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1",
		} {
			if !strings.Contains(status, want+"\n") && !strings.HasSuffix(status, want) {
				t.Errorf("status lacks %q:\n%s", want, status)
			}
		}
		if got := helperResult(t, plan, "setuid0"); got != "EPERM" {
			t.Errorf("setuid(0): got %s, want EPERM", got)
		}

		// No capabilities and no no_new_privs: every set empty, NNP off.
		plan.Capabilities = nil
		plan.NoNewPrivileges = false
		status = helperResult(t, plan, "status")
		for _, want := range []string{"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t0"} {
			if !strings.Contains(status, want) {
				t.Errorf("status lacks %q:\n%s", want, status)
			}
		}
	})
}

// TestRootConfinesEveryThread: in reap mode moat-init stays alive beside
// the program, and every one of its threads carries the plan's identity,
// capabilities, no_new_privs and filter, whether the drop changes the uid
// or keeps root (where moat-init skips the calls that change nothing).
// The bounding set is dropped on the forking thread alone (it only
// matters to an execve), so it is not compared.
func TestRootConfinesEveryThread(t *testing.T) {
	requireRoot(t)
	caps := &Capabilities{
		Bounding:    []string{"CAP_NET_BIND_SERVICE"},
		Effective:   []string{"CAP_NET_BIND_SERVICE"},
		Permitted:   []string{"CAP_NET_BIND_SERVICE"},
		Inheritable: []string{"CAP_NET_BIND_SERVICE"},
		Ambient:     []string{"CAP_NET_BIND_SERVICE"},
	}
	for _, c := range []struct {
		name string
		id   Identity
		want []string
	}{
		{"user", Identity{UID: testUID, GID: testGID, AdditionalGids: []uint32{61002}},
			[]string{"Uid:\t61000\t61000\t61000\t61000", "Gid:\t61001\t61001\t61001\t61001", "Groups:\t61002"}},
		{"root", Identity{UID: 0, GID: 0},
			[]string{"Uid:\t0\t0\t0\t0", "Gid:\t0\t0\t0\t0", "Groups:\t"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			plan := basePlan(t)
			plan.Mode = ModeReap
			plan.Identity = c.id
			plan.Capabilities = caps
			plan.NoNewPrivileges = true
			want := append(c.want, "CapInh:\t0000000000000400", "CapPrm:\t0000000000000400",
				"CapEff:\t0000000000000400", "CapAmb:\t0000000000000400",
				"NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1")
			threads := strings.Split(helperResult(t, plan, "parent-threads"), "\n--\n")
			if len(threads) < 2 {
				t.Fatalf("moat-init shows %d thread(s); a Go program has several:\n%s", len(threads), threads)
			}
			for i, th := range threads {
				var lines []string // the kernel ends the Groups line with a space
				for _, l := range strings.Split(th, "\n") {
					lines = append(lines, strings.TrimRight(l, " "))
				}
				for _, w := range want {
					if !slices.Contains(lines, w) {
						t.Errorf("moat-init thread %d of %d lacks %q:\n%s", i+1, len(threads), w, th)
					}
				}
			}
		})
	}
}

func TestRootExitCodes(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{ModeReap, ModeExec} {
		for _, pidns := range []bool{false, true} {
			plan := basePlan(t)
			plan.Mode = mode
			for _, c := range []struct {
				script string
				want   int
			}{{"exit 0", 0}, {"exit 7", 7}, {"kill -9 $$", 137}, {"kill -TERM $$", 143}} {
				if mode == ModeExec && pidns && strings.HasPrefix(c.script, "kill") {
					continue // PID 1 cannot kill itself: the reason reap mode exists
				}
				r := runInit(t, plan, []string{"sh", "-c", c.script}, pidNS(pidns))
				if r.code != c.want {
					t.Errorf("mode %s pidns %v, %q: got %v, want exit %d", mode, pidns, c.script, r, c.want)
				}
			}
		}
	}
	r := runInit(t, basePlan(t), []string{"/nonexistent/program"}, nil)
	if r.code != ExitNotFound || !strings.HasPrefix(r.stderr, "moat-init: ") {
		t.Errorf("missing program: %v", r)
	}
	r = runInit(t, basePlan(t), []string{"/etc/hostname"}, nil)
	if r.code != ExitCannotExec {
		t.Errorf("non-executable program: %v", r)
	}
}

func pidNS(on bool) func(*exec.Cmd) {
	return func(cmd *exec.Cmd) {
		if on {
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		}
	}
}

func TestRootExecModeIsPID1(t *testing.T) {
	requireRoot(t)
	plan := basePlan(t)
	plan.Mode = ModeExec
	r := runInit(t, plan, []string{"sh", "-c", "echo $$"}, pidNS(true))
	if strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("exec mode: the program should be PID 1, got %v", r)
	}
	plan.Mode = ModeReap
	r = runInit(t, plan, []string{"sh", "-c", "echo $$ $PPID"}, pidNS(true))
	if f := strings.Fields(r.stdout); len(f) != 2 || f[0] == "1" || f[1] != "1" {
		t.Errorf("reap mode: moat-init should be PID 1 and the program its child, got %v", r)
	}
	// --exec (the processes of `moat exec`) execs whatever the plan says.
	r = runInit(t, plan, []string{"sh", "-c", "echo $$"}, func(c *exec.Cmd) {
		pidNS(true)(c)
		c.Args = append([]string{c.Args[0], ExecFlag}, c.Args[1:]...)
	})
	if strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("--exec with a reap-mode plan: the program should be PID 1, got %v", r)
	}
}

// TestRootReapsOrphans: orphans re-parented to moat-init (PID 1 of a new PID
// namespace) are reaped while the program itself, sleep, never waits.
func TestRootReapsOrphans(t *testing.T) {
	requireRoot(t)
	for _, pidns := range []bool{true, false} {
		t.Run(fmt.Sprintf("pidns=%v", pidns), func(t *testing.T) {
			script := `for i in $(seq 20); do (sleep 0.2 &) ; done; exec sleep 3`
			cmd := startInit(t, basePlan(t), []string{"sh", "-c", script}, pidNS(pidns))
			initPID := cmd.Process.Pid
			deadline := time.Now().Add(2 * time.Second)
			sawOrphans := false
			for time.Now().Before(deadline) && !sawOrphans {
				sawOrphans = len(children(initPID)) > 1
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(1200 * time.Millisecond) // every orphan has exited by now
			kids := children(initPID)
			zombies := 0
			for _, state := range kids {
				if state == "Z" {
					zombies++
				}
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			r := finish(t, cmd, cmd.Wait())
			if !sawOrphans {
				t.Errorf("never saw orphans re-parented to moat-init (%v)", r)
			}
			if zombies != 0 || len(kids) != 1 {
				t.Errorf("moat-init's children after the orphans exited: %v, want only the program, no zombies", kids)
			}
			if r.code != 128+int(syscall.SIGTERM) {
				t.Errorf("SIGTERM forwarded to sleep: want exit 143, got %v", r)
			}
		})
	}
}

// children maps each child pid of parent to its state letter.
func children(parent int) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid int
		if _, err := fmt.Sscanf(s[i+2:], "%s %d", &state, &ppid); err == nil && ppid == parent {
			out[pid] = state
		}
	}
	return out
}

func TestRootSignalForwarding(t *testing.T) {
	requireRoot(t)
	// 37 is SIGRTMIN+3, which systemd in a container takes as "halt".
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGWINCH, 37} {
		t.Run(sig.String(), func(t *testing.T) {
			name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
			if name == "" {
				name = strconv.Itoa(int(sig))
			}
			script := fmt.Sprintf(`trap 'echo got-%s; exit 42' %s; echo ready; while :; do sleep 0.05; done`, name, name)
			out := &syncBuffer{}
			plan := basePlan(t)
			withReady, waitReady := readyFIFO(t, plan)
			cmd := startInit(t, plan, []string{"sh", "-c", script}, func(c *exec.Cmd) {
				pidNS(true)(c)
				withReady(c)
				c.Stdout = out
			})
			// The runtime's start waits for the readiness byte, which
			// moat-init writes once it relays signals.
			waitReady()
			waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			// A signal not forwarded leaves the program running.
			kill := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
			defer kill.Stop()
			r := finish(t, cmd, cmd.Wait())
			if r.code != 42 || !strings.Contains(out.String(), "got-"+name) {
				t.Errorf("%s to moat-init (PID 1): want the program's trap and exit 42, got exit %d, stdout %q, stderr %q", sig, r.code, out.String(), r.stderr)
			}
		})
	}
}

// readyFIFO gives plan a readiness FIFO, which moat-init inherits as the
// runtime passes it (opened read-write, here as fd 3), and returns the
// setup for startInit and a wait for moat-init's byte.
func readyFIFO(t *testing.T, plan *Plan) (setup func(*exec.Cmd), wait func()) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ready")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	plan.Ready = &Ready{Inode: st.Ino}
	setup = func(c *exec.Cmd) { c.ExtraFiles = append(c.ExtraFiles, f) }
	wait = func() {
		t.Helper()
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}, 10_000)
		if err != nil || n == 0 {
			t.Fatalf("moat-init did not signal readiness within 10s (%v)", err)
		}
	}
	return setup, wait
}

// TestRootReadyFIFO: moat-init writes its readiness byte in both modes and
// the program does not inherit the FIFO.
func TestRootReadyFIFO(t *testing.T) {
	requireRoot(t)
	inBothModes(t, func(t *testing.T, mode string) {
		plan := basePlan(t)
		plan.Mode = mode
		withReady, waitReady := readyFIFO(t, plan)
		out := &syncBuffer{}
		cmd := startInit(t, plan, []string{"sh", "-c", "ls -l /proc/self/fd/; echo listed; exec sleep 30"}, func(c *exec.Cmd) {
			pidNS(true)(c)
			withReady(c)
			c.Stdout = out
		})
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitReady()
		waitFor(t, func() bool { return strings.Contains(out.String(), "listed") })
		if !strings.Contains(out.String(), "->") || strings.Contains(out.String(), "/ready") {
			t.Errorf("the program's fds should not include the readiness FIFO: %s", out.String())
		}
	})
}

func TestRootNetNS(t *testing.T) {
	requireRoot(t)
	inBothModes(t, func(t *testing.T, mode string) {
		holder := exec.Command("unshare", "--net", "sleep", "30")
		if err := holder.Start(); err != nil {
			t.Skipf("skipping: unshare --net: %v", err)
		}
		t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
		nsPath := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
		var st unix.Stat_t
		waitFor(t, func() bool {
			var self unix.Stat_t
			return unix.Stat(nsPath, &st) == nil && unix.Stat("/proc/self/ns/net", &self) == nil && st.Ino != self.Ino
		})
		ns, err := os.Open(nsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		withFD := func(c *exec.Cmd) { c.ExtraFiles = []*os.File{ns} } // fd 3

		plan := basePlan(t)
		plan.Mode = mode
		plan.NetNS = &NetNS{FD: 3, Inode: st.Ino}
		r := runInit(t, plan, []string{rootEnv.helper, "netns"}, withFD)
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprint(st.Ino) {
			t.Errorf("program's netns: want inode %d, got %v", st.Ino, r)
		}
		r = runInit(t, plan, []string{"sh", "-c", "readlink /proc/$$/fd/3 || echo none"}, withFD)
		if strings.Contains(r.stdout, "net:") {
			t.Errorf("the netns fd leaked into the program: %v", r)
		}

		// FD 0: moat-init finds the namespace among its inherited fds, here
		// behind an unrelated one.
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devnull.Close()
		plan.NetNS = &NetNS{Inode: st.Ino}
		r = runInit(t, plan, []string{rootEnv.helper, "netns"}, func(c *exec.Cmd) { c.ExtraFiles = []*os.File{devnull, ns} })
		if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprint(st.Ino) {
			t.Errorf("netns found by inode: want inode %d, got %v", st.Ino, r)
		}
		r = runInit(t, plan, []string{rootEnv.helper, "netns"}, func(c *exec.Cmd) { c.ExtraFiles = []*os.File{devnull} })
		if r.code != ExitConfineFailed || r.stdout != "" || !strings.Contains(r.stderr, "no inherited fd") {
			t.Errorf("netns fd missing: want a refusal before the program runs, got %v", r)
		}

		plan.NetNS = &NetNS{FD: 3, Inode: st.Ino + 1}
		r = runInit(t, plan, []string{rootEnv.helper, "netns"}, withFD)
		if r.code != ExitConfineFailed || r.stdout != "" || !strings.Contains(r.stderr, "inode") {
			t.Errorf("wrong inode: want a refusal before the program runs, got %v", r)
		}
	})
}

// syncBuffer is a bytes.Buffer safe to read while the command writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}
