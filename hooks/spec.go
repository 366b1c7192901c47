// Package hooks assembles the sandbox around a container at OCI lifecycle
// points. This file is step 3 of the design, the spec rewrite: a pure
// function from the engine's spec and what `moat create` resolved to the
// spec libcontainer runs plus the confine.Plan moat-init applies.
package hooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/confine"
	"github.com/moatsandbox/moat/policy"
)

// CATrustDir is where the network issue mounts the sandbox CA files
// (ca.pem, ca-bundle.pem); RewriteInput.TrustMounts is its slot.
const CATrustDir = "/etc/moat-tls"

// SandboxEnv marks every sandboxed process's environment.
const SandboxEnv = "MOAT_SANDBOX=1"

// Errors Rewrite returns for specs moat refuses.
var (
	// ErrUserNamespace: user-namespaced containers (Kubernetes
	// hostUsers: false, Docker userns-remap, rootless) cannot enter a
	// host-made network namespace.
	ErrUserNamespace = errors.New("user-namespaced containers are not yet supported by moat " +
		"(Kubernetes hostUsers: false, Docker userns-remap, rootless): " +
		"moat-init cannot enter the sandbox's host-made network namespace from inside a user namespace")
	// ErrSeccompNotify: moat-init loads the container's filter itself and
	// has no way to hand a notify listener fd to the engine's agent.
	ErrSeccompNotify = errors.New("seccomp profiles with a notify listener (SCMP_ACT_NOTIFY or linux.seccomp.listenerPath) are not supported by moat: " +
		"moat-init loads the container's filter itself and cannot pass the listener fd to the seccomp agent")
	// ErrAlreadyRewritten: the spec already runs moat-init.
	// ErrNoMountNamespace: without a mount namespace, the bind mounts of
	// moat-init and its plan would be made in the host's mount namespace
	// and outlive the container.
	ErrNoMountNamespace = errors.New("the sandbox needs a mount namespace (linux.namespaces has no mount namespace): " +
		"moat-init and its plan are bind-mounted into the container's root filesystem")
	ErrAlreadyRewritten = errors.New("the spec is already rewritten for moat (process.args starts with " + confine.InitPath + ")")
)

// RewriteInput is what `moat create` resolved for the container.
type RewriteInput struct {
	Policy *policy.Policy // the container's policy
	Config *policy.Config // admin config; nil means policy.DefaultConfig()
	// Landlock is policy.LandlockPlan(Policy, spec, ...). Required.
	Landlock *policy.Plan
	// ContainerSeccomp is the spec's linux.seccomp compiled to BPF
	// (seccompbpf.Compile). Required exactly when the spec has a profile.
	ContainerSeccomp *confine.SeccompProgram
	// Identity is confine.ResolveUser(rootfs, run_as_user, run_as_group,
	// spec.Process.User); nil means the spec's numeric user.
	Identity *confine.Identity
	// InitPath and PlanPath are host paths of the moat-init binary and of
	// the plan file the caller writes (confine.WritePlan).
	InitPath, PlanPath string
	// Mode is policy.InitReap or policy.InitExec (the dev.moat.init
	// annotation, policy.AnnotatedInitMode); "" means reap.
	Mode string
	// NetNS is the inner netns moat-init joins (an inherited fd, found by
	// its inode). It makes the init keep CAP_SYS_ADMIN for the setns.
	NetNS *confine.NetNS
	// NetNSPath, when set, is the host path of the inner netns, which the
	// container's network namespace entry is to name: for a sandbox
	// without egress whose spec asks for a fresh netns, the inner netns is
	// that netns, and no second one is made. The spec's entry must have no
	// path.
	NetNSPath string
	// Ready is the start-readiness FIFO the first process inherits
	// (confine.Plan.Ready); nil for none.
	Ready *confine.Ready
	// Proxy is the sandbox proxy's URL ("http://10.200.0.1:3128"); it sets
	// the proxy environment. "" when the sandbox has no egress.
	Proxy string
	// TrustMounts is reserved for the network issue: read-only bind
	// mounts of the CA files under CATrustDir, appended as given.
	TrustMounts []specs.Mount
}

// Rewrite returns a copy of spec that runs the container's process under
// moat-init, and the plan moat-init applies. spec is not modified.
//
// The rewritten spec:
//   - runs `/.moat/init -- ARGS...`, as uid 0 / gid 0 with no additional
//     groups, with noNewPrivileges off and no linux.seccomp: moat-init
//     applies the original user, capabilities, no_new_privs and seccomp
//     profile itself (they go into the plan);
//   - gives the init exactly the spec's bounding, effective and permitted
//     capabilities plus what moat-init needs: CAP_SETUID, CAP_SETGID and
//     CAP_SETPCAP for the drop, and CAP_SYS_ADMIN when a setns is planned or
//     when, without no_new_privs, it must load seccomp filters or restrict
//     itself with Landlock; no inheritable or ambient capabilities;
//   - bind-mounts moat-init at /.moat/init and the plan at /.moat/plan.json,
//     read-only (and TrustMounts, when given);
//   - adds MOAT_SANDBOX=1 to the environment, the proxy variables when the
//     sandbox has a proxy, and, when the policy sets the user, HOME and
//     USER of that user;
//   - names NetNSPath, when given, in the network namespace entry.
//
// It refuses user-namespaced specs (ErrUserNamespace) and seccomp notify
// listeners (ErrSeccompNotify). With `sandbox: off` in the admin config it
// returns an unchanged copy and a nil plan.
func Rewrite(spec *specs.Spec, in RewriteInput) (*specs.Spec, *confine.Plan, error) {
	if spec == nil {
		return nil, nil, errors.New("rewrite spec: no spec")
	}
	out, err := copySpec(spec)
	if err != nil {
		return nil, nil, err
	}
	if in.Config != nil && !in.Config.Sandbox {
		return out, nil, nil
	}
	if err := check(spec, in); err != nil {
		return nil, nil, err
	}
	proc := out.Process

	plan := &confine.Plan{
		Version:         confine.PlanVersion,
		Mode:            in.Mode,
		NetNS:           in.NetNS,
		Ready:           in.Ready,
		Landlock:        in.Landlock,
		Identity:        identity(spec, in),
		Capabilities:    planCaps(spec.Process.Capabilities),
		NoNewPrivileges: spec.Process.NoNewPrivileges,
	}
	if plan.Mode == "" {
		plan.Mode = confine.ModeReap
	}
	if in.ContainerSeccomp != nil {
		plan.Seccomp = append(plan.Seccomp, *in.ContainerSeccomp)
	}
	moat, err := confine.MoatFilter()
	if err != nil {
		return nil, nil, err
	}
	plan.Seccomp = append(plan.Seccomp, moat)
	if policySetsUser(in.Policy) && plan.Identity.UID != 0 {
		dropToUser(plan.Capabilities)
	}
	plan.Env = envOverrides(in, plan.Identity)
	if err := plan.Validate(); err != nil {
		return nil, nil, fmt.Errorf("rewrite spec: %w", err)
	}

	proc.Args = append([]string{confine.InitPath, "--"}, proc.Args...)
	proc.User = specs.User{UID: 0, GID: 0, Umask: proc.User.Umask}
	// no_new_privs stays: libcontainer sets it before it execs moat-init,
	// whose every thread then has it from the start, and moat-init has no
	// stop-the-world round to make for it. It only ever tightens, and
	// nothing runs in between.
	proc.Capabilities = initCaps(spec.Process.Capabilities, needsSysAdmin(plan))
	proc.Env = confine.MergeEnv(proc.Env, plan.Env)
	if out.Linux != nil {
		out.Linux.Seccomp = nil
	}
	out.Mounts = append(out.Mounts,
		specs.Mount{Destination: confine.InitPath, Type: "bind", Source: in.InitPath, Options: []string{"bind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: confine.PlanPath, Type: "bind", Source: in.PlanPath, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
	)
	out.Mounts = append(out.Mounts, in.TrustMounts...)
	if in.NetNSPath != "" {
		NetNSEntry(out).Path = in.NetNSPath // check: the entry exists, without a path
	}
	return out, plan, nil
}

// check refuses what moat cannot sandbox and inputs that do not fit.
func check(spec *specs.Spec, in RewriteInput) error {
	p := spec.Process
	switch {
	case p == nil || len(p.Args) == 0:
		return errors.New("rewrite spec: process.args is empty")
	case p.Args[0] == confine.InitPath:
		return ErrAlreadyRewritten
	case in.InitPath == "" || in.PlanPath == "":
		return errors.New("rewrite spec: the host paths of moat-init and of the plan are required")
	case in.Landlock == nil:
		return errors.New("rewrite spec: no Landlock plan")
	}
	for _, m := range spec.Mounts {
		if d := path.Clean("/" + m.Destination); d == "/.moat" || strings.HasPrefix(d, "/.moat/") {
			return fmt.Errorf("rewrite spec: the spec already mounts %s, which moat reserves", m.Destination)
		}
	}
	for _, m := range in.TrustMounts {
		if !strings.HasPrefix(path.Clean(m.Destination), CATrustDir+"/") {
			return fmt.Errorf("rewrite spec: trust mount %s is not under %s", m.Destination, CATrustDir)
		}
	}
	if _, err := capSets(p.Capabilities); err != nil {
		return fmt.Errorf("rewrite spec: process.capabilities: %w", err)
	}
	if ns := NetNSEntry(spec); in.NetNSPath != "" && (ns == nil || ns.Path != "") {
		return errors.New("rewrite spec: the inner netns can only replace a fresh network namespace (an entry without a path)")
	}
	if err := CheckSandboxable(spec); err != nil {
		return err
	}
	var seccomp *specs.LinuxSeccomp
	if spec.Linux != nil {
		seccomp = spec.Linux.Seccomp
	}
	if seccomp != nil {
		if in.ContainerSeccomp == nil {
			return errors.New("rewrite spec: the spec has a seccomp profile but no compiled program was given")
		}
	} else if in.ContainerSeccomp != nil {
		return errors.New("rewrite spec: a compiled seccomp program was given but the spec has no profile")
	}
	return nil
}

// NetNSEntry is the spec's network namespace entry, nil when it has none.
func NetNSEntry(spec *specs.Spec) *specs.LinuxNamespace {
	if spec.Linux == nil {
		return nil
	}
	for i := range spec.Linux.Namespaces {
		if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
			return &spec.Linux.Namespaces[i]
		}
	}
	return nil
}

// CheckSandboxable refuses the specs moat cannot sandbox: no mount
// namespace (ErrNoMountNamespace), user namespaces (ErrUserNamespace) and
// seccomp notify listeners (ErrSeccompNotify).
func CheckSandboxable(spec *specs.Spec) error {
	l := spec.Linux
	if l == nil {
		return ErrNoMountNamespace
	}
	mountNS := false
	for _, ns := range l.Namespaces {
		mountNS = mountNS || ns.Type == specs.MountNamespace
	}
	if !mountNS {
		return ErrNoMountNamespace
	}
	if len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0 {
		return ErrUserNamespace
	}
	for _, ns := range l.Namespaces {
		if ns.Type == specs.UserNamespace {
			return ErrUserNamespace
		}
	}
	if l.Seccomp != nil && UsesSeccompNotify(l.Seccomp) {
		return ErrSeccompNotify
	}
	return nil
}

// UsesSeccompNotify reports whether a profile needs a notify listener.
func UsesSeccompNotify(s *specs.LinuxSeccomp) bool {
	if s.ListenerPath != "" || s.DefaultAction == specs.ActNotify {
		return true
	}
	for _, sc := range s.Syscalls {
		if sc.Action == specs.ActNotify {
			return true
		}
	}
	return false
}

func identity(spec *specs.Spec, in RewriteInput) confine.Identity {
	if in.Identity != nil {
		id := *in.Identity
		id.AdditionalGids = slices.Clone(id.AdditionalGids)
		return id
	}
	u := spec.Process.User
	return confine.Identity{UID: u.UID, GID: u.GID, AdditionalGids: slices.Clone(u.AdditionalGids)}
}

// policySetsUser reports whether the policy's process section changes the
// user, in which case HOME and USER follow it.
func policySetsUser(p *policy.Policy) bool {
	return p != nil && p.Process != nil && (p.Process.RunAsUser != "" || p.Process.RunAsGroup != "")
}

// NoProxy is what the sandbox never sends to the proxy.
const NoProxy = "127.0.0.1,localhost,::1"

// ProxyEnv is the environment that points programs at the proxy.
func ProxyEnv(proxy string) []string {
	return []string{
		"HTTP_PROXY=" + proxy, "HTTPS_PROXY=" + proxy, "ALL_PROXY=" + proxy,
		"http_proxy=" + proxy, "https_proxy=" + proxy, "all_proxy=" + proxy,
		"grpc_proxy=" + proxy,
		"NO_PROXY=" + NoProxy, "no_proxy=" + NoProxy,
		"NODE_USE_ENV_PROXY=1",
	}
}

func envOverrides(in RewriteInput, id confine.Identity) []string {
	env := []string{SandboxEnv}
	if in.Proxy != "" {
		env = append(env, ProxyEnv(in.Proxy)...)
	}
	if policySetsUser(in.Policy) {
		if id.Home != "" {
			env = append(env, "HOME="+id.Home)
		}
		if id.Username != "" {
			env = append(env, "USER="+id.Username)
		}
	}
	return env
}

func planCaps(c *specs.LinuxCapabilities) *confine.Capabilities {
	if c == nil {
		return nil
	}
	return &confine.Capabilities{
		Bounding:    slices.Clone(c.Bounding),
		Effective:   slices.Clone(c.Effective),
		Permitted:   slices.Clone(c.Permitted),
		Inheritable: slices.Clone(c.Inheritable),
		Ambient:     slices.Clone(c.Ambient),
	}
}

// dropToUser empties every capability set but the bounding set: when the
// policy moves the process from the spec's (root) user to another user, the
// capabilities the engine granted to root do not follow, as the kernel
// clears them on a setuid from root. The bounding set still limits what
// setuid programs can gain.
func dropToUser(c *confine.Capabilities) {
	if c == nil {
		return
	}
	c.Effective, c.Permitted, c.Inheritable, c.Ambient = nil, nil, nil, nil
}

// needsSysAdmin: setns needs CAP_SYS_ADMIN; without no_new_privs so do
// seccomp(SECCOMP_SET_MODE_FILTER) and landlock_restrict_self.
func needsSysAdmin(p *confine.Plan) bool {
	if p.NetNS != nil {
		return true
	}
	landlock := p.Landlock != nil && len(p.Landlock.Rules) > 0
	return !p.NoNewPrivileges && (len(p.Seccomp) > 0 || landlock)
}

// initCaps is the spec's bounding, effective and permitted sets plus what
// moat-init needs.
func initCaps(c *specs.LinuxCapabilities, sysAdmin bool) *specs.LinuxCapabilities {
	need := []string{confine.CapSetUID, confine.CapSetGID, confine.CapSetPCap}
	if sysAdmin {
		need = append(need, confine.CapSysAdmin)
	}
	if c == nil {
		c = &specs.LinuxCapabilities{}
	}
	return &specs.LinuxCapabilities{
		Bounding:  union(c.Bounding, need),
		Effective: union(c.Effective, need),
		Permitted: union(c.Permitted, need),
	}
}

// union returns the names of a and b, canonical (CAP_ prefix, upper case),
// without duplicates, in capability order.
func union(a, b []string) []string {
	m, _ := confine.CapMask(a) // validated by check
	n, _ := confine.CapMask(b)
	return confine.CapNames(m | n)
}

func capSets(c *specs.LinuxCapabilities) (uint64, error) {
	if c == nil {
		return 0, nil
	}
	var all uint64
	for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
		m, err := confine.CapMask(set)
		if err != nil {
			return 0, err
		}
		all |= m
	}
	return all, nil
}

// copySpec deep-copies a spec through JSON, its defined form.
func copySpec(spec *specs.Spec) (*specs.Spec, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	var out specs.Spec
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	return &out, nil
}
