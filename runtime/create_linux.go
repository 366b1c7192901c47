package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moatsandbox/moat/policy"
	"github.com/moby/sys/userns"
	// With the devices controller registered, libcontainer's cgroup
	// managers enforce the spec's device rules.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// CreateOpts are the options of create and run.
type CreateOpts struct {
	ID string
	// Bundle is the bundle directory; "" is the current directory.
	Bundle        string
	PidFile       string
	ConsoleSocket string
	PidfdSocket   string
	NoPivot       bool
	NoNewKeyring  bool
	PreserveFDs   int

	// The remaining options are run's.

	Detach bool
	// Keep leaves the stopped container behind when its process exits.
	Keep        bool
	NoSubreaper bool

	// userRoot is SandboxRequest.UserRoot (moat box).
	userRoot string
}

// Create creates the container and starts its process, which then waits
// for `moat start`. It returns the status moat exits with: 0 on success.
func (r *Runtime) Create(o CreateOpts) (int, error) {
	return r.launchFirst(o, true)
}

// Run creates and starts the container. Unless detached, moat relays
// stdio and signals to the container's process, returns its exit status
// (128+n when signal n killed it) and, unless Keep, deletes the container.
func (r *Runtime) Run(o CreateOpts) (int, error) {
	return r.launchFirst(o, false)
}

// launchFirst creates the container from its bundle and launches its
// first process.
func (r *Runtime) launchFirst(o CreateOpts, createOnly bool) (int, error) {
	if o.ID == "" {
		return -1, ErrEmptyID
	}
	// The pid file is relative to where moat started, which is about to
	// change.
	pidFile, err := absPath(o.PidFile)
	if err != nil {
		return -1, err
	}
	cfg, err := r.adminConfig()
	if err != nil {
		return -1, err
	}
	// libcontainer refuses an id in use too, but only after the sandbox
	// is prepared, whose state is keyed by the id: refuse first, so a
	// duplicate create never touches the running container's sandbox.
	if _, err := os.Lstat(filepath.Join(r.Root, o.ID)); err == nil {
		return -1, libcontainer.ErrExist
	}
	// libcontainer resolves the spec's relative paths (the root
	// filesystem, bind sources) against the working directory.
	if o.Bundle != "" {
		if err := os.Chdir(o.Bundle); err != nil {
			return -1, err
		}
	}
	spec, err := loadSpec(specConfig)
	if err != nil {
		return -1, err
	}
	var netns, ready *os.File
	var settle, networkDone func() error
	if cfg.Sandbox {
		bundle, err := os.Getwd()
		if err != nil {
			return -1, err
		}
		p, err := prepareSandbox(SandboxRequest{ID: o.ID, Root: r.Root, Bundle: bundle, Spec: spec, Config: cfg, PolicyFlag: r.PolicyPath, UserRoot: o.userRoot})
		if err != nil {
			return -1, err
		}
		spec, netns, ready, settle, networkDone = p.spec, p.netns, p.ready, p.settle, p.networkDone
		defer netns.Close()
		defer ready.Close()
	}
	forget := func() {
		if networkDone != nil {
			_ = networkDone() // the teardown waits for the setup
		}
		if cfg.Sandbox {
			if err := removeSandbox(cfg, r.Root, o.ID); err != nil {
				logrus.Warn(err)
			}
		}
	}
	c, err := r.newContainer(o, spec)
	if err != nil {
		forget()
		return -1, err
	}
	l := &launch{
		container:     c,
		process:       spec.Process,
		first:         true,
		createOnly:    createOnly,
		detach:        o.Detach,
		destroyOnExit: !o.Keep,
		onDestroy:     forget,
		subreaper:     !o.NoSubreaper,
		consoleSocket: o.ConsoleSocket,
		pidfdSocket:   o.PidfdSocket,
		pidFile:       pidFile,
		inherit:       socketActivationFiles(),
		preserveFDs:   o.PreserveFDs,
		netns:         netns,
		ready:         ready,
		beforeRun:     settle,
	}
	return l.execute()
}

// adminConfig loads the admin configuration. Its paths, --config and
// --policy are absolute or relative to the directory moat started in, so
// --policy is made absolute before create changes into the bundle.
func (r *Runtime) adminConfig() (*policy.Config, error) {
	cfg, err := policy.LoadConfig(r.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("admin config: %w", err)
	}
	if cfg.Sandbox {
		if r.PolicyPath, err = absPath(r.PolicyPath); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// newContainer converts the spec into a libcontainer configuration and
// creates the container's state under the root.
func (r *Runtime) newContainer(o CreateOpts, spec *specs.Spec) (*libcontainer.Container, error) {
	normalizeSpec(spec, specconv.KnownMountOptions())
	euid := os.Geteuid()
	config, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		Spec:             spec,
		CgroupName:       o.ID,
		UseSystemdCgroup: r.SystemdCgroup,
		NoPivotRoot:      o.NoPivot,
		NoNewKeyring:     o.NoNewKeyring,
		RootlessEUID:     euid != 0,
		RootlessCgroups:  r.rootlessCgroups(euid),
	})
	if err != nil {
		return nil, err
	}
	return libcontainer.Create(r.Root, o.ID, config)
}

// rootlessCgroups decides whether libcontainer may ignore cgroup
// permission errors: --rootless when given, else whenever moat is not
// root, or is root only inside a user namespace and drives cgroupfs
// itself.
func (r *Runtime) rootlessCgroups(euid int) bool {
	switch {
	case r.Rootless != nil:
		return *r.Rootless
	case euid != 0:
		return true
	default:
		return !r.SystemdCgroup && userns.RunningInUserNS()
	}
}

// absPath makes a non-empty path absolute.
func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

// socketActivationFiles takes over the sockets systemd passed to moat by
// socket activation (LISTEN_PID is moat's pid, LISTEN_FDS sockets from fd
// 3 on) for the container's first process, and clears the variables.
func socketActivationFiles() []*os.File {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil
	}
	count, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || count < 1 {
		return nil
	}
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(name)
	}
	files := make([]*os.File, count)
	for i := range files {
		fd := 3 + i
		files[i] = os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
	}
	return files
}
