package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// ExecOpts are the options of exec.
type ExecOpts struct {
	ID string
	// Args is the command to run. Unused with Process.
	Args []string
	// Process is a process.json file (-p) that describes the whole
	// process; the process options below are then ignored.
	Process       string
	ConsoleSocket string
	PidfdSocket   string
	Detach        bool
	PidFile       string
	PreserveFDs   int
	// Cgroups are --cgroup values: [CONTROLLER[,CONTROLLER...]:]PATH.
	Cgroups      []string
	IgnorePaused bool

	// Process options, applied to the process of the bundle's config.json.

	Cwd  string
	Env  []string
	TTY  bool
	User string // UID[:GID]
	// AdditionalGIDs are added to the spec's additional groups.
	AdditionalGIDs []int64
	ProcessLabel   string
	AppArmor       string
	// NoNewPrivs is nil unless --no-new-privs was given.
	NoNewPrivs *bool
	// Caps are added to the bounding, effective and permitted sets.
	Caps []string
}

// Exec runs another process in a running container and, unless
// detached, returns its exit status.
func (r *Runtime) Exec(o ExecOpts) (int, error) {
	pidFile, err := absPath(o.PidFile)
	if err != nil {
		return -1, err
	}
	c, err := r.load(o.ID)
	if err != nil {
		return -1, err
	}
	status, err := c.Status()
	if err != nil {
		return -1, err
	}
	switch {
	case status == libcontainer.Stopped:
		return -1, errors.New("cannot exec in a stopped container")
	case status == libcontainer.Paused && !o.IgnorePaused:
		return -1, errors.New("cannot exec in a paused container (use --ignore-paused to override)")
	}
	// Before o.process, which changes into the bundle: --config may be
	// relative to where moat started.
	cfg, err := r.adminConfig()
	if err != nil {
		return -1, err
	}
	proc, err := o.process(c)
	if err != nil {
		return -1, err
	}
	var netns *os.File
	if sandboxed(cfg, r.Root, o.ID) {
		sandboxExec(c, proc)
		if netns, err = openInnerNetNS(cfg, r.Root, o.ID); err != nil {
			return -1, err
		}
		defer netns.Close()
	}
	cgroupPaths, err := parseCgroupArgs(o.Cgroups)
	if err != nil {
		return -1, err
	}
	l := &launch{
		container:     c,
		process:       proc,
		detach:        o.Detach,
		consoleSocket: o.ConsoleSocket,
		pidfdSocket:   o.PidfdSocket,
		pidFile:       pidFile,
		preserveFDs:   o.PreserveFDs,
		cgroupPaths:   cgroupPaths,
		netns:         netns,
	}
	return l.execute()
}

// process returns the process to exec: process.json as it is, or the
// process of the container's config.json with the options applied.
func (o *ExecOpts) process(c *libcontainer.Container) (*specs.Process, error) {
	if o.Process != "" {
		return readProcessFile(o.Process)
	}
	bundle, ok := utils.SearchLabels(c.Config().Labels, "bundle")
	if !ok {
		return nil, errors.New("bundle not found in labels")
	}
	// As for create, the spec's relative paths are the bundle's.
	if err := os.Chdir(bundle); err != nil {
		return nil, err
	}
	spec, err := loadSpec(specConfig)
	if err != nil {
		return nil, err
	}
	if len(o.Args) == 0 {
		return nil, errors.New("exec args cannot be empty")
	}
	p := spec.Process
	if err := o.apply(p); err != nil {
		return nil, err
	}
	return p, checkProcess(p)
}

func readProcessFile(path string) (*specs.Process, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := new(specs.Process)
	if err := json.NewDecoder(f).Decode(p); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return p, checkProcess(p)
}

// apply overrides p with the exec options.
func (o *ExecOpts) apply(p *specs.Process) error {
	p.Args = o.Args
	// An exec'd process has a terminal only when asked for, whatever the
	// spec's process has.
	p.Terminal = o.TTY
	p.Env = append(p.Env, o.Env...)
	setIfGiven(&p.Cwd, o.Cwd)
	setIfGiven(&p.ApparmorProfile, o.AppArmor)
	setIfGiven(&p.SelinuxLabel, o.ProcessLabel)
	if o.NoNewPrivs != nil {
		p.NoNewPrivileges = *o.NoNewPrivs
	}
	if len(o.Caps) > 0 {
		addCapabilities(p, o.Caps)
	}
	if o.User != "" {
		if err := setUser(&p.User, o.User); err != nil {
			return err
		}
	}
	for _, gid := range o.AdditionalGIDs {
		if gid < 0 {
			return fmt.Errorf("additional-gids must be a positive number %d", gid)
		}
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(gid))
	}
	return nil
}

func setIfGiven(dst *string, val string) {
	if val != "" {
		*dst = val
	}
}

// addCapabilities adds caps to the bounding, effective and permitted
// sets, and to the ambient set when the spec has an inheritable set (an
// ambient capability must be inheritable, which exec does not change).
func addCapabilities(p *specs.Process, caps []string) {
	if p.Capabilities == nil {
		p.Capabilities = &specs.LinuxCapabilities{}
	}
	set := p.Capabilities
	set.Bounding = append(set.Bounding, caps...)
	set.Effective = append(set.Effective, caps...)
	set.Permitted = append(set.Permitted, caps...)
	if set.Inheritable != nil {
		set.Ambient = append(set.Ambient, caps...)
	}
}

// setUser applies --user UID[:GID].
func setUser(u *specs.User, arg string) error {
	uidText, gidText, hasGID := strings.Cut(arg, ":")
	uid, err := strconv.Atoi(uidText)
	if err != nil {
		return fmt.Errorf("bad uid: %w", err)
	}
	if hasGID {
		gid, err := strconv.Atoi(gidText)
		if err != nil {
			return fmt.Errorf("bad gid: %w", err)
		}
		u.GID = uint32(gid)
	}
	u.UID = uint32(uid)
	return nil
}

// parseCgroupArgs reads --cgroup values into sub-cgroup paths by
// controller: either a single PATH (cgroup v2, controller "") or any
// number of CONTROLLER[,CONTROLLER...]:PATH (cgroup v1).
func parseCgroupArgs(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	paths := make(map[string]string)
	for _, arg := range args {
		controllers, path, found := strings.Cut(arg, ":")
		if !found {
			if len(args) > 1 {
				return nil, fmt.Errorf("invalid --cgroup argument: %s (missing <controller>: prefix)", arg)
			}
			paths[""] = arg
			continue
		}
		for _, name := range strings.Split(controllers, ",") {
			if name == "" {
				return nil, fmt.Errorf("invalid --cgroup argument: %s (empty <controller> prefix)", arg)
			}
			if _, dup := paths[name]; dup {
				return nil, fmt.Errorf("invalid --cgroup argument(s): controller %s specified multiple times", name)
			}
			paths[name] = path
		}
	}
	return paths, nil
}
