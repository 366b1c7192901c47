package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/moatsandbox/moat/confine"
	"github.com/moatsandbox/moat/confine/seccompbpf"
	"github.com/moatsandbox/moat/hooks"
	"github.com/moatsandbox/moat/policy"
)

// SandboxRequest is what prepareSandbox gets: the loaded spec and
// everything create knows about the container.
type SandboxRequest struct {
	ID     string
	Root   string // the runtime's --root, absolute
	Bundle string // absolute bundle path
	Spec   *specs.Spec
	Config *policy.Config
	// PolicyFlag is `moat --policy FILE`; "" when not given.
	PolicyFlag string
	// UserRoot is the directory whose etc/passwd and etc/group resolve
	// the policy's user; "" is the spec's root filesystem. moat box sets
	// it to "/": its root filesystem is assembled from host mounts only
	// when the container starts.
	UserRoot string
}

// prepared is a container's sandbox, ready for libcontainer.
type prepared struct {
	spec *specs.Spec
	// netns is the inner network namespace the container's init inherits
	// (moat-init finds it by inode and joins it).
	netns *os.File
	// ready is the write end of the start-readiness FIFO, for the init.
	ready *os.File
	// settle waits for what comes up while libcontainer creates the
	// container: the rest of the network setup and the sandbox's sidecar,
	// started by this create. The container's process may not run before
	// it returns nil. nil: nothing to wait for.
	settle func() error
	// networkDone waits for the network setup alone; the sandbox may not
	// be torn down before it returns. nil: nothing to wait for.
	networkDone func() error
}

// prepareSandbox turns the engine's spec into the spec libcontainer runs:
// it resolves the container's policy, derives the confinement plan
// (identity, Landlock rules, seccomp programs), gives the container its
// network sandbox (setupNetwork) and rewrites the spec so that the process
// starts under moat-init, which applies the plan. The plan is written under
// the admin config's state directory (sandboxDir); on error nothing is left
// behind.
func prepareSandbox(req SandboxRequest) (_ *prepared, retErr error) {
	spec := req.Spec
	if err := hooks.CheckSandboxable(spec); err != nil {
		return nil, err
	}
	if spec.Process == nil {
		return nil, errors.New("config.json has no process to sandbox")
	}
	res, err := policy.Resolve(req.Config, spec.Annotations, req.PolicyFlag, policy.Loader{})
	if err != nil {
		return nil, err
	}
	for _, w := range res.Warnings {
		logrus.Warn(w.String())
	}
	// The network sandbox (setupNetwork) follows res.Policy; pol confines
	// the container's own processes.
	pol := confinementPolicy(res.Policy, spec, req.ID)
	mode, err := policy.AnnotatedInitMode(spec.Annotations)
	if err != nil {
		return nil, err
	}
	var user, group string
	if pol.Process != nil {
		user, group = pol.Process.RunAsUser, pol.Process.RunAsGroup
	}
	userRoot := req.UserRoot
	if userRoot == "" {
		userRoot = rootfsPath(req.Bundle, spec)
	}
	identity, err := confine.ResolveUser(userRoot, user, group, spec.Process.User)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", res.Description, err)
	}
	var containerFilter *confine.SeccompProgram
	if spec.Linux != nil && spec.Linux.Seccomp != nil {
		cache := seccompbpf.Cache{Dir: filepath.Join(req.Config.StateDir, "seccomp")}
		if containerFilter, err = cache.Compile(spec.Linux.Seccomp); err != nil {
			return nil, fmt.Errorf("compile the container's seccomp profile: %w", err)
		}
	}
	plan, findings, err := policy.LandlockPlan(pol, spec, policy.PlanOptions{})
	if err != nil {
		return nil, fmt.Errorf("landlock plan: %w", err)
	}
	for _, f := range findings {
		if f.Severity == policy.SeverityWarning {
			logrus.Warn("landlock plan: " + f.String())
		} else {
			logrus.Debug("landlock plan: " + f.String())
		}
	}
	initPath, err := initBinary()
	if err != nil {
		return nil, err
	}

	dir := sandboxDir(req.Config, req.Root, req.ID)
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("create sandbox state: %w", err)
	}
	// A directory of its own or nothing: undoing must never remove
	// another container's state (left by a crash, delete cleans it).
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("create sandbox state: %w", err)
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	key := filepath.Base(dir)
	sn, err := setupNetwork(req, res, key)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			sn.inner.Close()
			if sn.networkDone != nil {
				_ = sn.networkDone() // it undid its own part on error
			}
			if err := leaveNetwork(req.Config, sn.dir, key, req.ID); err != nil {
				logrus.Warnf("undo network sandbox: %v", err)
			}
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, networkLink), []byte(sn.dir), 0o600); err != nil {
		return nil, fmt.Errorf("record the sandbox network: %w", err)
	}
	ready, readyIno, err := makeReadyFIFO(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			ready.Close()
		}
	}()
	planPath := filepath.Join(dir, "plan.json")
	out, cplan, err := hooks.Rewrite(spec, hooks.RewriteInput{
		Policy:           pol,
		Config:           req.Config,
		Landlock:         plan,
		ContainerSeccomp: containerFilter,
		Identity:         &identity,
		InitPath:         initPath,
		PlanPath:         planPath,
		Mode:             mode,
		NetNS:            &confine.NetNS{Inode: sn.inode},
		NetNSPath:        sn.asContainerNetNS,
		Ready:            &confine.Ready{Inode: readyIno},
		Proxy:            sn.proxy,
	})
	if err != nil {
		return nil, err // already says "rewrite spec: ..."
	}
	if err := confine.WritePlan(planPath, cplan); err != nil {
		return nil, err
	}
	logrus.WithFields(logrus.Fields{"id": req.ID, "policy": res.Description, "network": sn.dir}).Debug("sandbox prepared")
	return &prepared{spec: out, netns: sn.inner, ready: ready, settle: sn.settle(), networkDone: sn.networkDone}, nil
}

// networkLink, in a container's sandbox directory, names the network
// directory of its sandbox.
const networkLink = "network"

// Annotations containerd's CRI plugin gives a Kubernetes pod's sandbox
// (pause) container: its type, and the pod's id, which is the container's
// own.
const (
	annotationCRIContainerType = "io.kubernetes.cri.container-type"
	annotationCRISandboxID     = "io.kubernetes.cri.sandbox-id"
)

// isPodSandbox reports whether spec is container id's and a CRI pod's
// sandbox container. The id check keeps engines that pass users'
// annotations through (Docker, nerdctl) from marking a container a pod
// sandbox: their ids are random.
func isPodSandbox(spec *specs.Spec, id string) bool {
	return spec.Annotations[annotationCRIContainerType] == "sandbox" && spec.Annotations[annotationCRISandboxID] == id
}

// confinementPolicy is the policy that confines container id's own
// processes: its policy, except for a pod's sandbox (pause) container,
// which gets only the pod's network sandbox. The pause image has no
// /etc/passwd to resolve a run_as_user in, nor the paths of a
// hard_requirement filesystem policy, so the process, filesystem and
// landlock sections, written for the pod's containers, would fail every
// pod; the pause process is confined by the baseline alone (Landlock in
// best_effort, moat's seccomp filter, the spec's user) and joins the inner
// netns like any other.
func confinementPolicy(pol *policy.Policy, spec *specs.Spec, id string) *policy.Policy {
	if !isPodSandbox(spec, id) {
		return pol
	}
	return &policy.Policy{Version: pol.Version, Source: pol.Source}
}

// sandboxDir is where moat keeps a sandboxed container's own files (the
// confinement plan moat-init reads), keyed by the runtime root and the
// container id: engines run several roots, and ids are unique only within
// one.
func sandboxDir(cfg *policy.Config, root, id string) string {
	sum := sha256.Sum256([]byte(root + "\x00" + id))
	return filepath.Join(cfg.StateDir, "sandboxes", hex.EncodeToString(sum[:12]))
}

// sandboxed reports whether the container was created in a sandbox.
func sandboxed(cfg *policy.Config, root, id string) bool {
	_, err := os.Stat(filepath.Join(sandboxDir(cfg, root, id), "plan.json"))
	return err == nil
}

// removeSandbox takes a container out of its network sandbox (tearing the
// sandbox down with its last member) and deletes the container's sandbox
// files; it is idempotent.
func removeSandbox(cfg *policy.Config, root, id string) error {
	dir := sandboxDir(cfg, root, id)
	var errs []error
	if netDir, err := os.ReadFile(filepath.Join(dir, networkLink)); err == nil {
		if err := leaveNetwork(cfg, string(netDir), filepath.Base(dir), id); err != nil {
			errs = append(errs, fmt.Errorf("remove network sandbox: %w", err))
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox state: %w", err))
		}
	}
	return errors.Join(errs...)
}

// sandboxExecArgs returns the argv of a process exec'd into a sandboxed
// container: it passes through moat-init with the container's plan, which
// then execs it (as runc would start it, it is the process the engine
// signals and waits for; its orphans go to the container's init).
func sandboxExecArgs(args []string) []string {
	return append([]string{confine.InitPath, confine.ExecFlag, "--"}, args...)
}

// rootfsPath resolves the spec's root path against the bundle.
func rootfsPath(bundle string, spec *specs.Spec) string {
	if spec.Root == nil {
		return bundle
	}
	if filepath.IsAbs(spec.Root.Path) {
		return spec.Root.Path
	}
	return filepath.Join(bundle, spec.Root.Path)
}

// initBinary finds moat-init: beside the moat executable, else in PATH.
func initBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "moat-init")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("moat-init")
	if err != nil {
		return "", fmt.Errorf("moat-init not found beside moat or in PATH (install both with `make install`): %w", err)
	}
	return filepath.Abs(p)
}
