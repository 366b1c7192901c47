package runtime

import (
	"io"
	"os"
)

// DefaultRoot is the state directory used when --root is not given.
const DefaultRoot = "/run/moat"

// specConfig is the name of the spec file in a bundle.
const specConfig = "config.json"

// Runtime holds the global options shared by every container command.
type Runtime struct {
	// Root is the absolute state directory (--root); each container keeps
	// its libcontainer state in a subdirectory named after its id.
	Root string
	// RootSet records that --root was given explicitly, in which case
	// `list` reports a missing Root instead of printing nothing.
	RootSet bool
	// SystemdCgroup selects the systemd cgroup driver (--systemd-cgroup).
	SystemdCgroup bool
	// Rootless forces (true) or forbids (false) the rootless cgroup
	// manager (--rootless); nil detects it.
	Rootless *bool
	// ConfigPath is the admin configuration file (--config); ""
	// means policy.DefaultConfigPath.
	ConfigPath string
	// PolicyPath is the policy for containers that do not name one
	// (--policy, e.g. from Docker's runtimeArgs). Used in sandbox mode only.
	PolicyPath string
	// Version is moat's version, reported by `features`.
	Version string
	// Stdout receives what commands print (state, list, ps, events,
	// features); nil means os.Stdout.
	Stdout io.Writer
}

// stdout is where command output goes.
func (r *Runtime) stdout() io.Writer {
	if r.Stdout == nil {
		return os.Stdout
	}
	return r.Stdout
}
