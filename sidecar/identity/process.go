// Package identity tells the sidecar which sandboxed process opened a
// connection: the peer's socket inode from sock_diag in the sandbox's inner
// network namespace, the process holding that socket among the sandbox's
// processes only, its executable and ancestors (up to the sandbox's init,
// moat-init excluded), each with a SHA-256 fingerprint checked trust on
// first use.
package identity

import (
	"fmt"

	"github.com/moatsandbox/moat/policy"
)

// Process is the resolved caller of one connection.
type Process struct {
	PID int
	// Exe is the executable as the container sees its path, with its
	// SHA-256 (hex) as the fingerprint.
	Exe policy.Exe
	// Ancestors are the parent, grandparent, ... up to the sandbox's
	// init, moat-init excluded; AncestorPIDs are their pids, in the same
	// order.
	Ancestors    []policy.Exe
	AncestorPIDs []int
	// CmdlinePaths are the absolute paths in the argv of the process and
	// its ancestors (they explain denials, never grant anything).
	CmdlinePaths []string
}

// Input is the policy input of a connection by p to host:port.
func (p *Process) Input(host string, port uint16) policy.Input {
	return policy.Input{
		Binary:       p.Exe,
		Ancestors:    p.Ancestors,
		CmdlinePaths: p.CmdlinePaths,
		Host:         host,
		Port:         port,
	}
}

// AncestorPaths are the ancestors' executable paths.
func (p *Process) AncestorPaths() []string {
	out := make([]string, len(p.Ancestors))
	for i, a := range p.Ancestors {
		out[i] = a.Path
	}
	return out
}

// IntegrityError is returned when an executable's content changed since
// the sandbox first saw it at that path (trust on first use).
type IntegrityError struct {
	Path     string
	Ancestor bool
	Old, New string // hex SHA-256
}

func (e *IntegrityError) Error() string {
	if e.Ancestor {
		return fmt.Sprintf("ancestor integrity check failed for %s: hash changed from %s to %s", e.Path, e.Old, e.New)
	}
	return fmt.Sprintf("binary integrity check failed: %s hash changed from %s to %s", e.Path, e.Old, e.New)
}
