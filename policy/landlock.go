package policy

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/policy/plan"
)

// Plan access levels and rule origins (see package plan).
const (
	AccessRO = plan.AccessRO
	AccessRW = plan.AccessRW

	OriginPolicy     = plan.OriginPolicy
	OriginWorkdir    = plan.OriginWorkdir
	OriginBaseline   = plan.OriginBaseline
	OriginSystem     = plan.OriginSystem
	OriginEntrypoint = plan.OriginEntrypoint
	OriginMount      = plan.OriginMount
	OriginDevice     = plan.OriginDevice
	OriginGPU        = plan.OriginGPU
)

// Finding severities.
const (
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// Finding is a remark about a derivation that did not fail: something the
// operator should know, such as a path the policy lists both read-only and
// read-write.
type Finding struct {
	Severity string `json:"severity"`
	Path     string `json:"path,omitempty"`
	Message  string `json:"message"`
}

func (f Finding) String() string {
	if f.Path == "" {
		return f.Severity + ": " + f.Message
	}
	return f.Severity + ": " + f.Path + ": " + f.Message
}

// Plan is the Landlock ruleset moat-init applies inside the container
// (plan.Plan).
type Plan = plan.Plan

// PlanRule grants rights on a path and everything beneath it (plan.PlanRule).
type PlanRule = plan.PlanRule

// PlanOptions adds what the spec alone does not tell.
type PlanOptions struct {
	// GPU applies the GPU rules even when the spec lists no /dev/nvidiactl
	// and has no NVIDIA hook.
	GPU bool
}

// OpenShell's baseline paths (row 19 of the reference), added when the plan
// does not already name them.
var (
	baselineRO = []string{"/usr", "/lib", "/etc", "/app", "/var/log", "/proc", "/dev/urandom"}
	baselineRW = []string{"/sandbox", "/tmp"}
)

// What a dynamically linked program needs beyond the baseline, and the
// device nodes every program expects to write.
var (
	systemRO  = []string{"/bin", "/sbin", "/lib64"}
	devicesRW = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/random", "/dev/urandom", "/dev/pts", "/dev/shm"}
)

// GPU paths (OpenShell's GPU_BASELINE_*).
var (
	gpuRW = []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}
	gpuRO = []string{"/run/nvidia-persistenced"}
)

var gpuDevice = lazyRegexp(`^/dev/nvidia[0-9]+$`)

// Files the engine bind-mounts read-write for the container's name
// resolution. The sidecar resolves names with these same files, so the
// agent must not be able to rewrite them (an allowed host pointed at an
// address of the agent's choosing): they are read-only whatever the mount
// says, unless the policy itself lists them read-write.
var resolverFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

// Mount types and destinations that are kernel interfaces rather than
// files: the baseline and the GPU rules decide /proc, and /sys stays out.
var (
	skipMountTypes = []string{"proc", "sysfs", "cgroup", "cgroup2", "mqueue", "devpts"}
	skipMountDirs  = []string{"/proc", "/sys", "/.moat"} // and everything beneath
)

// LandlockPlan derives the Landlock plan for a container from its policy
// and its OCI spec. It is a pure function: it reads no files, so a path may
// be in the plan and missing in the container (moat-init skips missing
// optional rules). p may be nil (no policy: baseline only) and so may spec.
//
// Rights per path, in order:
//   - a path the policy lists read-write is read-write (listed read-only as
//     well: still read-write, with a warning);
//   - a path the policy lists read-only stays read-only whatever else asks
//     for it (OpenShell bug #905), except /proc when a GPU is present,
//     which cuInit needs writable (OpenShell PR #710; a warning says so);
//   - any other path is read-write when something derived asks for that
//     (include_workdir, baseline, a read-write mount, a device), except the
//     engine's resolver files, which stay read-only; else read-only.
//
// A derived rule never makes `/` writable. The error reports a policy path
// that is not absolute or contains NUL (Parse rejects those already).
func LandlockPlan(p *Policy, spec *specs.Spec, opts PlanOptions) (*Plan, []Finding, error) {
	b := newPlanBuilder()
	if p != nil && p.Filesystem != nil {
		for _, path := range p.Filesystem.ReadOnly {
			if err := b.policy(path, AccessRO); err != nil {
				return nil, nil, err
			}
		}
		for _, path := range p.Filesystem.ReadWrite {
			if err := b.policy(path, AccessRW); err != nil {
				return nil, nil, err
			}
		}
	}
	b.addWorkdir(p, spec)
	b.addGPU(spec, opts)
	b.addSpec(spec)
	for _, path := range baselineRO {
		b.derived(path, AccessRO, OriginBaseline)
	}
	for _, path := range baselineRW {
		b.derived(path, AccessRW, OriginBaseline)
	}

	out := &Plan{Compatibility: BestEffort, Rules: b.rules(), GPUDevices: b.gpu}
	if p != nil && p.Landlock.Hard() {
		out.Compatibility = HardRequirement
	}
	if spec != nil && spec.Process != nil && len(spec.Process.Args) > 0 {
		out.EntrypointInterpreter = true
	}
	slices.SortStableFunc(b.findings, func(a, b Finding) int { return strings.Compare(a.Path, b.Path) })
	return out, b.findings, nil
}

// planPath collects what every source asks for one path.
type planPath struct {
	policyRO, policyRW   bool
	derivedRO, derivedRW bool
	originRO, originRW   string // first derived origin asking for each
	mountRW              bool   // a read-write mount asks for it
	forceRW, forceRO     bool
}

type planBuilder struct {
	paths    map[string]*planPath
	gpu      bool
	findings []Finding
}

func newPlanBuilder() *planBuilder {
	return &planBuilder{paths: make(map[string]*planPath)}
}

func (b *planBuilder) get(path string) *planPath {
	pp := b.paths[path]
	if pp == nil {
		pp = &planPath{}
		b.paths[path] = pp
	}
	return pp
}

func (b *planBuilder) warn(path, format string, args ...any) {
	b.findings = append(b.findings, Finding{Severity: SeverityWarning, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (b *planBuilder) info(path, format string, args ...any) {
	b.findings = append(b.findings, Finding{Severity: SeverityInfo, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (b *planBuilder) policy(path, access string) error {
	if strings.IndexByte(path, 0) >= 0 {
		return fmt.Errorf("filesystem_policy: path %q contains a NUL byte", path)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("filesystem_policy: path %q is not absolute", path)
	}
	pp := b.get(filepath.Clean(path))
	if access == AccessRW {
		pp.policyRW = true
	} else {
		pp.policyRO = true
	}
	return nil
}

// derived records a path the policy did not list. Paths that are not
// absolute are ignored: the spec's own validation is runc's business.
func (b *planBuilder) derived(path, access, origin string) {
	if !filepath.IsAbs(path) || strings.IndexByte(path, 0) >= 0 {
		return
	}
	path = filepath.Clean(path)
	if path == "/" && access == AccessRW {
		b.warn(path, "%s would make / writable; not added", origin)
		return
	}
	pp := b.get(path)
	if access == AccessRW {
		if !pp.derivedRW {
			pp.originRW = origin
		}
		pp.derivedRW = true
	} else {
		if !pp.derivedRO {
			pp.originRO = origin
		}
		pp.derivedRO = true
	}
}

func (b *planBuilder) addWorkdir(p *Policy, spec *specs.Spec) {
	if p == nil || p.Filesystem == nil || !p.Filesystem.IncludeWorkdir {
		return
	}
	if spec == nil || spec.Process == nil || spec.Process.Cwd == "" {
		b.warn("", "include_workdir: the spec has no working directory")
		return
	}
	cwd := spec.Process.Cwd
	if !filepath.IsAbs(cwd) {
		b.warn(cwd, "include_workdir: the working directory is not absolute; not added")
		return
	}
	cwd = filepath.Clean(cwd)
	if cwd == "/" {
		// Engines default to / when an image sets no WORKDIR: normal, so
		// only an info finding.
		b.info(cwd, "include_workdir: the working directory is /, which is never made writable; not added")
		return
	}
	if pp := b.paths[cwd]; pp != nil && pp.policyRO && !pp.policyRW {
		b.warn(cwd, "include_workdir: the policy lists the working directory read-only; it stays read-only")
	}
	b.derived(cwd, AccessRW, OriginWorkdir)
}

func (b *planBuilder) addSpec(spec *specs.Spec) {
	for _, path := range systemRO {
		b.derived(path, AccessRO, OriginSystem)
	}
	for _, path := range devicesRW {
		b.derived(path, AccessRW, OriginDevice)
	}
	for _, path := range resolverFiles {
		b.get(path).forceRO = true
	}
	if spec == nil {
		return
	}
	if spec.Process != nil && len(spec.Process.Args) > 0 && filepath.IsAbs(spec.Process.Args[0]) {
		b.derived(spec.Process.Args[0], AccessRO, OriginEntrypoint)
	}
	for _, m := range spec.Mounts {
		if skipMount(m) {
			continue
		}
		dest := m.Destination
		if !filepath.IsAbs(dest) {
			dest = "/" + dest // runc resolves relative destinations from the root
		}
		access := AccessRW
		if mountReadOnly(m.Options) {
			access = AccessRO
		}
		b.derived(dest, access, OriginMount)
		if access == AccessRW {
			b.get(filepath.Clean(dest)).mountRW = true
		}
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			b.derived(d.Path, AccessRW, OriginDevice)
		}
	}
}

func skipMount(m specs.Mount) bool {
	if slices.Contains(skipMountTypes, m.Type) {
		return true
	}
	dest := filepath.Clean("/" + m.Destination)
	if dest == "/dev" || dest == "/" {
		return true
	}
	for _, dir := range skipMountDirs {
		if dest == dir || strings.HasPrefix(dest, dir+"/") {
			return true
		}
	}
	return false
}

func mountReadOnly(options []string) bool {
	return slices.Contains(options, "ro") || slices.Contains(options, "rro")
}

// addGPU applies OpenShell's GPU baseline when the container gets NVIDIA
// devices: listed in the spec, promised by an NVIDIA hook, or by opts.
func (b *planBuilder) addGPU(spec *specs.Spec, opts PlanOptions) {
	if !opts.GPU && !specWantsGPU(spec) {
		return
	}
	b.gpu = true
	for _, path := range gpuRW {
		b.derived(path, AccessRW, OriginGPU)
	}
	for _, path := range gpuRO {
		b.derived(path, AccessRO, OriginGPU)
	}
	if spec != nil && spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			if gpuDevice().MatchString(d.Path) {
				b.derived(d.Path, AccessRW, OriginGPU)
			}
		}
	}
	proc := b.get("/proc")
	proc.forceRW = true
	if proc.policyRO && !proc.policyRW {
		b.warn("/proc", "the policy lists /proc read-only; it is made read-write because the container has a GPU (CUDA's cuInit writes to /proc)")
	}
	b.derived("/proc", AccessRW, OriginGPU)
}

func specWantsGPU(spec *specs.Spec) bool {
	if spec == nil {
		return false
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			if filepath.Clean(d.Path) == "/dev/nvidiactl" {
				return true
			}
		}
	}
	if spec.Hooks != nil {
		for _, hooks := range [][]specs.Hook{spec.Hooks.Prestart, spec.Hooks.CreateRuntime, spec.Hooks.CreateContainer} {
			for _, h := range hooks {
				if isNvidiaHook(h) {
					return true
				}
			}
		}
	}
	return false
}

// isNvidiaHook recognises nvidia-container-runtime-hook and
// nvidia-container-toolkit (legacy mode), which add the GPU device nodes
// after the spec is written.
func isNvidiaHook(h specs.Hook) bool {
	if strings.HasPrefix(filepath.Base(h.Path), "nvidia-container") {
		return true
	}
	return len(h.Args) > 0 && strings.HasPrefix(filepath.Base(h.Args[0]), "nvidia-container")
}

// rules resolves every path to one rule, sorted by path.
func (b *planBuilder) rules() []PlanRule {
	rules := make([]PlanRule, 0, len(b.paths))
	for path, pp := range b.paths {
		r := PlanRule{Path: path}
		switch {
		case pp.policyRW:
			r.Access, r.Origin = AccessRW, OriginPolicy
			if pp.policyRO {
				b.warn(path, "listed both read_only and read_write; it is read-write")
			}
		case pp.policyRO:
			r.Access, r.Origin = AccessRO, OriginPolicy
			if pp.forceRW {
				r.Access = AccessRW
			} else if pp.mountRW {
				b.warn(path, "the spec mounts it read-write but the policy lists it read_only; it stays read-only")
			}
		case !pp.derivedRO && !pp.derivedRW:
			continue // only marked (a resolver file nothing asked for)
		case pp.derivedRW && !pp.forceRO:
			r.Access, r.Origin, r.Optional = AccessRW, pp.originRW, true
		default:
			origin := pp.originRO
			if origin == "" {
				origin = pp.originRW
			}
			r.Access, r.Origin, r.Optional = AccessRO, origin, true
		}
		rules = append(rules, r)
	}
	slices.SortFunc(rules, func(a, b PlanRule) int { return strings.Compare(a.Path, b.Path) })
	return rules
}
