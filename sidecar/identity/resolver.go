package identity

import "errors"

// Config says which sandbox a Resolver serves.
type Config struct {
	// InnerNetNS is the path of the sandbox's inner network namespace (a
	// bind-mounted nsfs file). Its processes are the sandbox's processes.
	InnerNetNS string
	// ProcRoot is where procfs is mounted; "/proc" when empty.
	ProcRoot string
}

// Errors a Lookup wraps; each one denies the connection.
var (
	// ErrNotFound: no socket in the inner netns has the connection's
	// addresses (the client is gone, or did not connect from the sandbox).
	ErrNotFound = errors.New("connection not found in the sandbox network namespace")
	// ErrNoOwner: the socket exists but no sandbox process holds it.
	ErrNoOwner = errors.New("no sandbox process holds the socket")
	// ErrAmbiguousOwner: two different processes hold the socket, so the
	// connection cannot be attributed to one binary.
	ErrAmbiguousOwner = errors.New("ambiguous socket owner")
	// ErrDeletedExe: the executable was deleted (or replaced) after the
	// process started, so its path names another file or none.
	ErrDeletedExe = errors.New("executable was deleted after the process started")
	// ErrClosed: the Resolver was closed.
	ErrClosed = errors.New("identity resolver is closed")
)
