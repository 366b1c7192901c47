package runtime

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/moatsandbox/moat/hooks"
	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/control"
	"github.com/moatsandbox/moat/sidecar/declog"
)

// sidecarUser is the uid and gid the sidecar drops to after its setup
// (nobody).
const sidecarUser = 65534

// nflogGroup is the NFLOG group of refused bypass attempts. NFLOG groups
// belong to a network namespace, so every inner netns uses the same one.
const nflogGroup = 100

// nfQueue is the NFQUEUE new direct TCP connections of an egress sandbox
// wait in while the sidecar names their binary; per netns, like nflogGroup.
const nfQueue = 100

// Files of a network directory (<state_dir>/networks/<key>/), shared by
// the containers of one sandbox.
const (
	outerNetNSFile = "outer-netns" // the outer netns moat made (fresh-netns specs)
	membersDir     = "members"     // one file per member container
	policyFile     = "policy.yaml" // the sidecar's policy document
	sidecarPIDFile = "sidecar.pid"
	sidecarSocket  = "sidecar.sock"
)

// sandboxNet is the network half of a sandbox as a container sees it.
type sandboxNet struct {
	dir   string // the network directory
	inner *os.File
	// inode of the inner netns, for the plan.
	inode uint64
	// proxy is the proxy URL for the environment; "" without egress.
	proxy string
	// joined is true when the container joined an existing sandbox.
	joined bool
	// asContainerNetNS, when set, is the inner netns's path, which the
	// container's network namespace entry is to name (see setupNetwork).
	asContainerNetNS string
	// networkDone waits for the network setup still running in the
	// background (hooks.StartNetwork) and reports how it went; nil when
	// the container joined a sandbox. It must return before the
	// container's process runs and before the sandbox is torn down.
	networkDone func() error
	// sidecarReady waits for a sidecar this create started; nil when the
	// sandbox has none or it was running already.
	sidecarReady func() error
}

// networksDir is where sandboxes' network directories live.
func networksDir(cfg *policy.Config) string { return filepath.Join(cfg.StateDir, "networks") }

// indexDir maps nsfs inodes (inner and outer netns) and container ids to
// network directories, so that containers sharing a netns join one sandbox
// and `moat policy show|apply` find a sidecar whatever --root created it.
func indexDir(cfg *policy.Config, kind string) string {
	return filepath.Join(cfg.StateDir, "index", kind)
}

// setupNetwork gives the container its network sandbox: it joins the
// sandbox whose inner or outer netns the spec names, or makes a new one
// (outer netns, inner netns, veth, nftables, sidecar). spec's network
// namespace entry is rewritten to the netns libcontainer must create the
// container in. On error nothing is left behind.
func setupNetwork(req SandboxRequest, res *policy.Resolved, key string) (_ *sandboxNet, retErr error) {
	cfg, spec := req.Config, req.Spec
	nsEntry := hooks.NetNSEntry(spec)
	if nsEntry != nil && nsEntry.Path != "" {
		if dir, ok := lookupNetNS(cfg, nsEntry.Path); ok {
			return joinNetwork(cfg, dir, key, req.ID)
		}
	}
	netDir := filepath.Join(networksDir(cfg), key)
	if err := os.MkdirAll(networksDir(cfg), 0o700); err != nil {
		return nil, fmt.Errorf("create network state: %w", err)
	}
	// Never adopt (or, undoing, destroy) another container's state.
	if err := os.Mkdir(netDir, 0o700); err != nil {
		return nil, fmt.Errorf("create network state: %w", err)
	}
	if err := os.Mkdir(filepath.Join(netDir, membersDir), 0o700); err != nil {
		os.Remove(netDir)
		return nil, fmt.Errorf("create network state: %w", err)
	}
	undo := []func(){func() { os.RemoveAll(netDir) }}
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	pol := res.Policy
	ports, err := policy.AnnotatedPorts(spec.Annotations)
	if err != nil {
		return nil, err
	}
	ports = mergePorts(pol.Ports, ports)
	egress := len(pol.Network) > 0 || pol.Inference != nil || cfg.Inference != nil || len(ports) > 0

	outer := ""
	switch {
	case nsEntry == nil:
		// The host's network namespace: the inner netns hangs off it.
	case nsEntry.Path != "":
		outer = nsEntry.Path
	case egress:
		// A fresh netns, made and pinned here so that the sidecar can
		// start in it before the container exists; engine hooks that
		// configure the container's netns configure this one.
		outer = filepath.Join(netDir, outerNetNSFile)
		if err := hooks.NewNetNS(outer); err != nil {
			return nil, fmt.Errorf("create the outer network namespace: %w", err)
		}
		undo = append(undo, func() { _ = hooks.RemoveNetNS(outer) })
		nsEntry.Path = outer
	default:
		// A fresh netns and no egress: nothing of moat's runs there, so
		// moat makes none (the inner netns serves as the container's, or
		// libcontainer makes it as it does for runc: see below).
	}

	n, networkDone, err := hooks.StartNetwork(hooks.NetworkSpec{
		Dir:          netDir,
		OuterNetNS:   outer,
		Pool:         cfg.AddressPool,
		AllocDir:     filepath.Join(cfg.StateDir, "alloc"),
		Egress:       egress,
		ProxyPort:    cfg.ProxyPort,
		NFLogGroup:   nflogGroup,
		NFQueue:      nfQueue,
		InboundPorts: ports,
		// An outer netns moat made goes with the sandbox (leaveNetwork).
		OuterDisposable: nsEntry != nil && outer == filepath.Join(netDir, outerNetNSFile),
		KernelDir:       cfg.StateDir,
	})
	if err != nil {
		return nil, fmt.Errorf("network sandbox: %w", err)
	}
	undo = append(undo, func() {
		_ = networkDone() // it undid its own part on error
		if err := hooks.TeardownNetwork(netDir); err != nil {
			logrus.Warnf("undo network sandbox: %v", err)
		}
	})
	// libcontainer applies the spec's sysctls to the outer netns (and
	// fails the create on a bad one); the agent's netns gets the net.*
	// ones as well where they exist there (interface-specific keys may
	// name the outer netns's interfaces).
	if spec.Linux != nil {
		if err := hooks.ApplyNetSysctls(n.InnerPath, spec.Linux.Sysctl); err != nil {
			logrus.Warnf("sandbox network namespace: %v", err)
		}
	}
	sn := &sandboxNet{dir: netDir, inode: n.InnerInode, networkDone: networkDone}
	if nsEntry != nil && nsEntry.Path == "" && !egress && !hasHooks(spec) {
		// The spec asks for a fresh netns that nothing configures: the
		// inner netns is that netns, and libcontainer joins it rather
		// than make a second, empty one beside it, which moat-init left
		// at once (2-3 ms of every start on the 2-vCPU test VM). With
		// hooks, which may configure the container's netns (Docker's
		// libnetwork, nerdctl's CNI hook), the fresh one stays theirs:
		// what they add there must never reach the agent.
		sn.asContainerNetNS = n.InnerPath
	}
	if egress {
		sc := &control.Config{
			Sandbox:      req.ID,
			PolicySource: res.Description,
			InnerNetNS:   n.InnerPath,
			Proxy:        n.Proxy.String(),
			Socket:       filepath.Join(netDir, sidecarSocket),
			LogDir:       filepath.Join(cfg.LogDir, req.ID),
			LogMaxBytes:  int64(cfg.LogMaxSizeMB) << 20,
			LogMaxFiles:  cfg.LogMaxFiles,
			NFLogGroup:   nflogGroup,
			NFQueue:      nfQueue,
			User:         sidecarUser,
			Group:        sidecarUser,
		}
		sc.ResolvConf, sc.Hosts = nameFiles(req.Bundle, spec)
		for _, p := range ports {
			sc.Inbound = append(sc.Inbound, control.Forward{Port: p, Target: netip.AddrPortFrom(n.InnerAddr.Addr(), p).String()})
		}
		if res.Data != nil {
			sc.PolicyFile = filepath.Join(netDir, policyFile)
			if err := os.WriteFile(sc.PolicyFile, res.Data, 0o600); err != nil {
				return nil, fmt.Errorf("write the sandbox policy: %w", err)
			}
		}
		wait, err := startSidecar(netDir, outer, sc)
		if err != nil {
			return nil, err
		}
		sn.sidecarReady = wait
		undo = append(undo, func() { stopSidecar(netDir) })
		sn.proxy = "http://" + n.Proxy.String()
	}
	if err := indexNetNS(cfg, netDir, n, outer != ""); err != nil {
		return nil, err
	}
	undo = append(undo, func() { unindexNetNS(cfg, netDir) })
	return sn, addMember(cfg, sn, key, req.ID)
}

// joinNetwork adds a container to the sandbox in dir (Docker's
// --network container:, the containers of a pod).
func joinNetwork(cfg *policy.Config, dir, key, id string) (*sandboxNet, error) {
	n, err := hooks.LoadNetwork(dir)
	if err != nil {
		return nil, fmt.Errorf("join the sandbox of %s: %w", dir, err)
	}
	sn := &sandboxNet{dir: dir, inode: n.InnerInode, joined: true}
	if n.Proxy.IsValid() {
		sn.proxy = "http://" + n.Proxy.String()
	}
	return sn, addMember(cfg, sn, key, id)
}

// settle is what the container's process waits for: the rest of the
// network setup, then the sidecar. nil when there is nothing to wait for.
func (sn *sandboxNet) settle() func() error {
	if sn.networkDone == nil && sn.sidecarReady == nil {
		return nil
	}
	return func() error {
		if sn.networkDone != nil {
			if err := sn.networkDone(); err != nil {
				return fmt.Errorf("network sandbox: %w", err)
			}
		}
		if sn.sidecarReady != nil {
			return sn.sidecarReady()
		}
		return nil
	}
}

// addMember records the container in the sandbox, indexes its id and
// opens the inner netns for its init.
func addMember(cfg *policy.Config, sn *sandboxNet, key, id string) error {
	if err := os.WriteFile(filepath.Join(sn.dir, membersDir, key), []byte(id), 0o600); err != nil {
		return fmt.Errorf("record sandbox member: %w", err)
	}
	idx := indexDir(cfg, "containers")
	if err := os.MkdirAll(idx, 0o700); err != nil {
		return fmt.Errorf("container index: %w", err)
	}
	link := filepath.Join(idx, id)
	_ = os.Remove(link)
	if err := os.Symlink(sn.dir, link); err != nil {
		return fmt.Errorf("container index: %w", err)
	}
	f, err := os.Open(filepath.Join(sn.dir, hooks.InnerNetNSFile))
	if err != nil {
		_ = os.Remove(link)
		return fmt.Errorf("open the inner network namespace: %w", err)
	}
	sn.inner = f
	return nil
}

// containerNetwork is the network directory of container id, found through
// the index whatever --root created it.
func containerNetwork(cfg *policy.Config, id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return "", fmt.Errorf("invalid container id %q", id)
	}
	dir, err := os.Readlink(filepath.Join(indexDir(cfg, "containers"), id))
	if err != nil {
		return "", fmt.Errorf("container %s has no network sandbox", id)
	}
	return dir, nil
}

// leaveNetwork removes a container from its sandbox and, when it was the
// last member, tears the sandbox's network down: sidecar, nftables, veth,
// namespaces, address, index entries. Idempotent.
func leaveNetwork(cfg *policy.Config, dir, key, id string) error {
	member := filepath.Join(dir, membersDir, key)
	if data, err := os.ReadFile(member); err == nil && id == "" {
		id = string(data)
	}
	if link := filepath.Join(indexDir(cfg, "containers"), id); id != "" {
		if target, err := os.Readlink(link); err == nil && target == dir {
			_ = os.Remove(link)
		}
	}
	_ = os.Remove(member)
	if left, _ := os.ReadDir(filepath.Join(dir, membersDir)); len(left) > 0 {
		return nil
	}
	// The sidecar winds down (flushing its decision log) while the
	// network is torn down.
	sidecarGone := beginStopSidecar(dir)
	unindexNetNS(cfg, dir)
	var errs []error
	if err := hooks.TeardownNetwork(dir); err != nil {
		errs = append(errs, err)
	}
	if outer := filepath.Join(dir, outerNetNSFile); exists(outer) {
		if err := hooks.RemoveNetNS(outer); err != nil {
			errs = append(errs, err)
		}
	}
	sidecarGone()
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// hasHooks reports whether the spec runs any OCI hook.
func hasHooks(spec *specs.Spec) bool {
	h := spec.Hooks
	return h != nil && len(h.Prestart)+len(h.CreateRuntime)+len(h.CreateContainer)+
		len(h.StartContainer)+len(h.Poststart)+len(h.Poststop) > 0
}

// lookupNetNS finds the sandbox whose inner or outer netns is at path.
func lookupNetNS(cfg *policy.Config, path string) (string, bool) {
	ino, err := hooks.NetNSInode(path)
	if err != nil {
		return "", false
	}
	dir, err := os.Readlink(filepath.Join(indexDir(cfg, "netns"), strconv.FormatUint(ino, 10)))
	if err != nil || !exists(filepath.Join(dir, hooks.InnerNetNSFile)) {
		return "", false
	}
	return dir, true
}

func indexNetNS(cfg *policy.Config, dir string, n *hooks.Network, outer bool) error {
	idx := indexDir(cfg, "netns")
	if err := os.MkdirAll(idx, 0o700); err != nil {
		return fmt.Errorf("netns index: %w", err)
	}
	inodes := []uint64{n.InnerInode}
	if outer {
		inodes = append(inodes, n.OuterInode)
	}
	var names []string
	for _, ino := range inodes {
		name := strconv.FormatUint(ino, 10)
		p := filepath.Join(idx, name)
		_ = os.Remove(p) // a stale entry of a namespace that is gone
		if err := os.Symlink(dir, p); err != nil {
			return fmt.Errorf("netns index: %w", err)
		}
		names = append(names, name)
	}
	return os.WriteFile(filepath.Join(dir, "index"), []byte(strings.Join(names, "\n")), 0o600)
}

func unindexNetNS(cfg *policy.Config, dir string) {
	data, _ := os.ReadFile(filepath.Join(dir, "index"))
	for _, name := range strings.Fields(string(data)) {
		p := filepath.Join(indexDir(cfg, "netns"), name)
		if target, err := os.Readlink(p); err == nil && target == dir {
			_ = os.Remove(p)
		}
	}
}

// nameFiles are the resolv.conf and hosts files the container resolves
// names with: the engine's bind mounts over /etc/resolv.conf and
// /etc/hosts, else the root filesystem's own.
func nameFiles(bundle string, spec *specs.Spec) (resolv, hosts string) {
	rootfs := rootfsPath(bundle, spec)
	resolv, hosts = filepath.Join(rootfs, "etc/resolv.conf"), filepath.Join(rootfs, "etc/hosts")
	for _, m := range spec.Mounts {
		src := m.Source
		if src != "" && !filepath.IsAbs(src) {
			src = filepath.Join(bundle, src)
		}
		switch filepath.Clean(m.Destination) {
		case "/etc/resolv.conf":
			resolv = src
		case "/etc/hosts":
			hosts = src
		}
	}
	return resolv, hosts
}

// mergePorts joins two port lists without duplicates.
func mergePorts(a, b []uint16) []uint16 {
	seen := map[uint16]bool{}
	var out []uint16
	for _, p := range append(append([]uint16(nil), a...), b...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// SandboxInfo describes a container's network sandbox for the user
// commands (`moat denials`, `moat policy show|apply`).
type SandboxInfo struct {
	Dir string // the network directory
	// Sidecar is the sidecar's configuration; nil when the sandbox has no
	// egress (and so no sidecar).
	Sidecar *control.Config
	// SidecarPID is the running sidecar's pid; 0 when it is not running.
	SidecarPID int
}

// Sandbox finds the network sandbox of container id, whatever --root the
// engine created it with.
func (r *Runtime) Sandbox(id string) (*SandboxInfo, error) {
	cfg, err := r.adminConfig()
	if err != nil {
		return nil, err
	}
	dir, err := containerNetwork(cfg, id)
	if err != nil {
		return nil, err
	}
	info := &SandboxInfo{Dir: dir}
	if exists(filepath.Join(dir, control.ConfigFile)) {
		if info.Sidecar, err = control.ReadConfig(filepath.Join(dir, control.ConfigFile)); err != nil {
			return nil, err
		}
	}
	if pid, ok := sidecarPID(dir); ok {
		info.SidecarPID = pid
	}
	return info, nil
}

// Annotations `moat state` adds to a sandboxed container's state.
const (
	AnnotationSidecar = "dev.moat.sidecar"
	AnnotationProxy   = "dev.moat.proxy"
)

// sandboxAnnotations says, for `moat state`, whether the container's
// sidecar runs. A dead sidecar leaves the sandbox without egress; that
// is also written to the decision log, once.
func (r *Runtime) sandboxAnnotations(id string) map[string]string {
	info, err := r.Sandbox(id)
	if err != nil || info.Sidecar == nil {
		return nil
	}
	out := map[string]string{AnnotationProxy: info.Sidecar.Proxy}
	if info.SidecarPID != 0 {
		out[AnnotationSidecar] = fmt.Sprintf("running (pid %d)", info.SidecarPID)
		return out
	}
	out[AnnotationSidecar] = SidecarDown
	noteSidecarDown(info)
	return out
}

// SidecarDown is how moat reports a sandbox whose sidecar is not running.
const SidecarDown = "not running: the sandbox has no egress"

// noteSidecarDown writes one decision-log record for a sidecar found dead.
func noteSidecarDown(info *SandboxInfo) {
	marker := filepath.Join(info.Dir, "sidecar.down-logged")
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return // already logged, or the state is gone
	}
	f.Close()
	w, err := declog.Open(info.Sidecar.LogDir, info.Sidecar.LogMaxBytes, info.Sidecar.LogMaxFiles)
	if err != nil {
		return
	}
	defer w.Close()
	w.Log(declog.Record{Sandbox: info.Sidecar.Sandbox, Action: declog.ActionDeny, Engine: declog.EngineSidecar,
		Reason: "the sidecar is " + SidecarDown + "; every connection is refused"})
}
