package runtime

import "errors"

// Sentinel errors. The texts of errors that come from libcontainer
// (libcontainer.ErrNotExist "container does not exist",
// libcontainer.ErrNotRunning "container not running", ...) are kept as they
// are, because containerd and Docker match on them.
var (
	// ErrEmptyID is runc's error for a missing container id.
	ErrEmptyID = errors.New("container id cannot be empty")

	// ErrNotSupported is returned by checkpoint and restore.
	ErrNotSupported = errors.New("not supported by moat")
)
