package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/policy"
)

// BoxOpts are the options of `moat box`.
type BoxOpts struct {
	// ID names the container; "" picks "box-" and a random suffix.
	ID string
	// Args is the command to sandbox, looked up in the caller's PATH
	// inside the box the way a shell would.
	Args []string
	// RW are host paths the command may write, on top of the policy's
	// read_write paths.
	RW []string
}

// ErrBoxSandboxOff is Box's answer when the admin config turns the
// sandbox off: a box without the sandbox would confine nothing.
var ErrBoxSandboxOff = errors.New("moat box needs the sandbox on, but the admin configuration says sandbox: off")

// BoxSpecInput is what boxSpec needs to know about the host and the
// caller.
type BoxSpecInput struct {
	Args []string
	Env  []string
	// Cwd is the caller's working directory; "" runs in /.
	Cwd      string
	Terminal bool
	// HostDirs are the names of the directories at the top of the host's
	// root filesystem; each is bind-mounted read-only (recursively) at
	// the same place. The host's /proc, /sys, /dev, /tmp and /run are left
	// out whatever the list says: the box gets its own.
	HostDirs []string
	// RW are absolute host paths bind-mounted read-write over the
	// read-only view, in this order after sorting parents first.
	RW []string
}

// boxOwnMounts are the top-level directories the box gets fresh file
// systems for rather than the host's.
var boxOwnMounts = map[string]bool{"proc": true, "sys": true, "dev": true, "tmp": true, "run": true}

// boxSpec builds the spec of a box: the command on a read-only view of
// the host's file systems, with a private /tmp and /run, its own /proc and
// /dev, new pid, mount, ipc and uts namespaces and the host's network. It
// is pure; the root filesystem is the bundle's "rootfs" directory, which
// the caller fills with the mount points and the host's top-level
// symbolic links.
func boxSpec(in BoxSpecInput) *specs.Spec {
	cwd := in.Cwd
	if cwd == "" {
		cwd = "/"
	}
	env := append([]string(nil), in.Env...)
	if in.Terminal && !hasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	spec := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Terminal: in.Terminal,
			Args:     append([]string(nil), in.Args...),
			Env:      env,
			Cwd:      cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: true,
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
			},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
				"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	dirs := append([]string(nil), in.HostDirs...)
	sort.Strings(dirs)
	for _, d := range dirs {
		if d == "" || strings.Contains(d, "/") || d == "." || d == ".." || boxOwnMounts[d] {
			continue
		}
		p := "/" + d
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: p, Type: "bind", Source: p,
			Options: []string{"rbind", "ro", "rro", "nosuid", "nodev"},
		})
	}
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		specs.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		specs.Mount{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
	)
	rw := boxRWPaths(in.RW)
	for _, p := range rw {
		spec.Mounts = append(spec.Mounts, specs.Mount{
			Destination: p, Type: "bind", Source: p,
			Options: []string{"rbind", "rw", "nosuid", "nodev"},
		})
	}
	return spec
}

// boxRWPaths cleans, de-duplicates and orders the read-write paths so
// that a parent is mounted before what lies under it. Paths on the box's
// own file systems (/tmp, /dev, ...) and relative paths are dropped: a
// host bind there would undo the box's private copy.
func boxRWPaths(paths []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		if !path.IsAbs(p) {
			continue
		}
		p = path.Clean(p)
		top := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 2)[0]
		if boxOwnMounts[top] || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") < strings.Count(out[j], "/") ||
			strings.Count(out[i], "/") == strings.Count(out[j], "/") && out[i] < out[j]
	})
	return out
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// boxID is what a box id may be: it names a directory under the state
// directory. Compiled on first use: bounded repetition makes a large
// program, and every container start runs this binary.
var boxID = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`) })

// Box runs one command in a sandbox on the host's own file systems and
// returns its exit status. The bundle lives in a private directory under
// the admin config's state directory and is removed, with the container,
// when the command exits.
func (r *Runtime) Box(o BoxOpts) (int, error) {
	if len(o.Args) == 0 {
		return -1, errors.New("moat box: no command given")
	}
	cfg, err := r.adminConfig()
	if err != nil {
		return -1, err
	}
	if !cfg.Sandbox {
		return -1, ErrBoxSandboxOff
	}
	id := o.ID
	if id == "" {
		b := make([]byte, 6)
		if _, err := rand.Read(b); err != nil {
			return -1, err
		}
		id = "box-" + hex.EncodeToString(b)
	}
	if !boxID().MatchString(id) {
		return -1, fmt.Errorf("invalid box id %q", id)
	}

	// The policy's read_write paths are bound writable too, so the
	// policy, not only Landlock's view of it, decides what the box may
	// change. It is resolved again by the sandbox path below.
	res, err := policy.Resolve(cfg, nil, r.PolicyPath, policy.Loader{})
	if err != nil {
		return -1, err
	}
	var rw []string
	if fs := res.Policy.Filesystem; fs != nil {
		for _, p := range fs.ReadWrite {
			if real, err := filepath.EvalSymlinks(p); err == nil && filepath.IsAbs(p) {
				rw = append(rw, real)
			}
		}
	}
	for _, p := range o.RW {
		abs, err := filepath.Abs(p)
		if err != nil {
			return -1, fmt.Errorf("--rw %s: %w", p, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return -1, fmt.Errorf("--rw %s: %w", p, err)
		}
		if real == "/" {
			return -1, errors.New("--rw /: the whole host cannot be writable")
		}
		rw = append(rw, real)
	}

	in := BoxSpecInput{Args: o.Args, Env: os.Environ(), RW: rw}
	if cwd, err := os.Getwd(); err == nil {
		in.Cwd = cwd
	}
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		in.Terminal = true
	}
	entries, err := os.ReadDir("/")
	if err != nil {
		return -1, err
	}
	var links []os.DirEntry
	for _, e := range entries {
		switch {
		case e.IsDir():
			in.HostDirs = append(in.HostDirs, e.Name())
		case e.Type()&os.ModeSymlink != 0:
			links = append(links, e)
		}
	}

	stateDir, err := filepath.EvalSymlinks(cfg.StateDir)
	if err != nil {
		if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
			return -1, fmt.Errorf("create state directory: %w", err)
		}
		if stateDir, err = filepath.EvalSymlinks(cfg.StateDir); err != nil {
			return -1, err
		}
	}
	boxes := filepath.Join(stateDir, "box")
	if err := os.MkdirAll(boxes, 0o700); err != nil {
		return -1, fmt.Errorf("create box directory: %w", err)
	}
	bundle := filepath.Join(boxes, id)
	if err := os.Mkdir(bundle, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return -1, fmt.Errorf("box %s is already running (%s exists)", id, bundle)
		}
		return -1, err
	}
	defer func() {
		if err := os.RemoveAll(bundle); err != nil {
			logrus.Warnf("remove box bundle: %v", err)
		}
		os.Remove(boxes) // only when no other box uses it
	}()
	if err := writeBoxBundle(bundle, boxSpec(in), links); err != nil {
		return -1, err
	}
	return r.launchFirst(CreateOpts{ID: id, Bundle: bundle, userRoot: "/"}, false)
}

// writeBoxBundle writes config.json and the root filesystem's skeleton:
// a directory for each mount point at the top and a copy of each of the
// host's top-level symbolic links (/bin -> usr/bin), so that the box never
// creates anything on the host itself.
func writeBoxBundle(bundle string, spec *specs.Spec, links []os.DirEntry) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	for _, m := range spec.Mounts {
		top := strings.SplitN(strings.TrimPrefix(m.Destination, "/"), "/", 2)[0]
		if top == "" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(rootfs, top), 0o755); err != nil {
			return err
		}
	}
	for _, l := range links {
		target, err := os.Readlink("/" + l.Name())
		if err != nil {
			return err
		}
		if err := os.Symlink(target, filepath.Join(rootfs, l.Name())); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	data, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, specConfig), data, 0o600)
}
