package confine

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/policy/plan"
)

// MinHardABI is the Landlock ABI hard_requirement insists on: 2, which adds
// LANDLOCK_ACCESS_FS_REFER (OpenShell's hard-coded ABI). The rights moat
// asks for grow with the kernel's ABI up to 5 (IOCTL_DEV).
const MinHardABI = 2

// Filesystem rights per ABI.
const (
	llFileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE
	llRightsV1   = llFileRights | unix.LANDLOCK_ACCESS_FS_READ_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	llRO = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	// Rights that apply to a file (not a directory); adding any other
	// right to a rule on a file is EINVAL.
	llFileOnly = llFileRights | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
)

func handledRights(abi int) uint64 {
	r := uint64(llRightsV1)
	if abi >= 2 {
		r |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		r |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		r |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	return r
}

// LandlockABI returns the kernel's Landlock ABI version, or 0 and the reason
// when Landlock is unavailable (not built in, or disabled at boot).
func LandlockABI() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	return int(v), nil
}

// landlockRuleset is a ruleset being built: its rule paths are open (as
// root, before the identity drop) and added; restrict enforces it.
type landlockRuleset struct {
	fd       int
	abi      int
	handled  uint64
	rules    int
	findings []string
}

type openedRule struct {
	path   string
	access string
	fd     int
	isDir  bool
}

// landlockRule is struct landlock_path_beneath_attr, which the kernel reads
// packed (12 bytes).
type landlockRule struct {
	allowed uint64
	fd      int32
}

// prepareLandlock probes the ABI, opens every rule path and builds the
// ruleset. It returns nil with no error when there is nothing to enforce
// (no plan, or best_effort on a kernel without Landlock, with a finding).
// prog is the resolved program about to run; extra rules for it come from
// the plan's EntrypointInterpreter flag.
func prepareLandlock(ll *plan.Plan, prog string, warn func(string)) (*landlockRuleset, error) {
	if ll == nil {
		warn("WARNING: the plan has no Landlock section; the filesystem is NOT confined")
		return nil, nil
	}
	hard := ll.Compatibility == plan.HardRequirement
	abi, err := LandlockABI()
	if err != nil || abi < 1 {
		if hard {
			return nil, fmt.Errorf("landlock: hard_requirement, but the kernel does not support Landlock (%v)", err)
		}
		warn(fmt.Sprintf("WARNING: landlock best_effort: the kernel does not support Landlock (%v); the filesystem policy is NOT enforced", err))
		return nil, nil
	}
	if hard && abi < MinHardABI {
		return nil, fmt.Errorf("landlock: hard_requirement needs Landlock ABI %d, the kernel has %d", MinHardABI, abi)
	}

	rules := ll.Rules
	if ll.EntrypointInterpreter && prog != "" {
		rules = append(rules, entrypointRules(rules, prog)...)
	}
	if ll.GPUDevices {
		rules = append(rules, gpuDeviceRules()...)
	}
	if len(rules) == 0 {
		warn("WARNING: the Landlock plan has no rules; the filesystem is NOT confined")
		return nil, nil
	}

	// Open every path first, before anything is restricted or dropped
	// (OpenShell bug #803: paths opened after the drop silently failed).
	var opened []openedRule
	defer func() {
		for _, o := range opened {
			_ = unix.Close(o.fd)
		}
	}()
	var findings []string
	for _, r := range rules {
		fd, err := unix.Open(r.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			if r.Optional {
				continue
			}
			if hard {
				return nil, fmt.Errorf("landlock: hard_requirement: cannot open %s (%s): %w", r.Path, accessName(r.Access), err)
			}
			findings = append(findings, fmt.Sprintf("warning: landlock best_effort: skipped %s path %s: %v", accessName(r.Access), r.Path, err))
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("landlock: stat %s: %w", r.Path, err)
		}
		opened = append(opened, openedRule{path: r.Path, access: r.Access, fd: fd, isDir: st.Mode&unix.S_IFMT == unix.S_IFDIR})
	}
	for _, f := range findings {
		warn(f)
	}
	if len(opened) == 0 {
		return nil, fmt.Errorf("landlock: none of the %d plan paths could be opened", len(rules))
	}

	handled := handledRights(abi)
	attr := struct{ handledFS uint64 }{handled}
	rfd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if errno != 0 {
		return nil, fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	rs := &landlockRuleset{fd: int(rfd), abi: abi, handled: handled, findings: findings}
	unix.CloseOnExec(rs.fd)
	for _, o := range opened {
		allowed := handled
		if o.access == plan.AccessRO {
			allowed = llRO
		}
		if !o.isDir {
			allowed &= llFileOnly
		}
		allowed &= handled
		rule := landlockRule{allowed: allowed, fd: int32(o.fd)}
		_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(rs.fd), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		if errno != 0 {
			_ = unix.Close(rs.fd)
			return nil, fmt.Errorf("landlock_add_rule %s: %w", o.path, errno)
		}
		rs.rules++
	}
	return rs, nil
}

// restrict enforces the ruleset on the threads t names. It needs
// no_new_privs or CAP_SYS_ADMIN (moat-init has one of them at this point).
func (rs *landlockRuleset) restrict(t threads) error {
	defer unix.Close(rs.fd)
	if errno := t.syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(rs.fd), 0, 0); errno != 0 {
		if errno == unix.EPERM {
			return fmt.Errorf("landlock_restrict_self: %w (needs no_new_privs or CAP_SYS_ADMIN)", errno)
		}
		return fmt.Errorf("landlock_restrict_self: %w", errno)
	}
	return nil
}

func accessName(access string) string {
	if access == plan.AccessRW {
		return "read_write"
	}
	return "read_only"
}

// entrypointRules adds the program and, for a `#!` script, its interpreter,
// read-only and optional, unless a rule already covers them.
func entrypointRules(rules []plan.PlanRule, prog string) []plan.PlanRule {
	var out []plan.PlanRule
	for _, p := range []string{prog, interpreterOf(prog)} {
		if p == "" || coveredBy(rules, p) {
			continue
		}
		out = append(out, plan.PlanRule{Path: p, Access: plan.AccessRO, Optional: true, Origin: plan.OriginEntrypoint})
	}
	return out
}

func coveredBy(rules []plan.PlanRule, path string) bool {
	for _, r := range rules {
		if r.Path == "/" || path == r.Path || strings.HasPrefix(path, r.Path+"/") {
			return true
		}
	}
	return false
}

// interpreterOf returns the absolute interpreter named by a `#!` line, or "".
func interpreterOf(prog string) string {
	f, err := os.OpenFile(prog, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	line, err := bufio.NewReaderSize(f, 256).ReadSlice('\n')
	if err != nil && len(line) == 0 {
		return ""
	}
	if !bytes.HasPrefix(line, []byte("#!")) {
		return ""
	}
	fields := strings.Fields(string(line[2:]))
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) {
		return ""
	}
	return filepath.Clean(fields[0])
}

// isNvidiaDevice reports whether name matches nvidia[0-9]+, an NVIDIA GPU's
// device node (not nvidiactl, nvidia-uvm and the like). No regexp: moat-init
// does not link the package.
func isNvidiaDevice(name string) bool {
	n, ok := strings.CutPrefix(name, "nvidia")
	if !ok || n == "" {
		return false
	}
	for _, c := range []byte(n) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// gpuDeviceRules adds every /dev/nvidiaN present now, read-write.
func gpuDeviceRules() []plan.PlanRule {
	entries, err := os.ReadDir("/dev")
	if err != nil {
		return nil
	}
	var out []plan.PlanRule
	for _, e := range entries {
		if isNvidiaDevice(e.Name()) {
			out = append(out, plan.PlanRule{Path: "/dev/" + e.Name(), Access: plan.AccessRW, Optional: true, Origin: plan.OriginGPU})
		}
	}
	return out
}
