//go:build !linux

package confine

// Options tune Confine and Run.
type Options struct {
	Warn func(line string)
}

// Program is what runs once the process is confined.
type Program struct {
	Path string
	Args []string
	Env  []string
}

// Confine is only supported on Linux.
func Confine(*Plan, []string, []string, Options) (*Program, error) { return nil, ErrNotSupported }

// Run is only supported on Linux.
func Run(*Plan, []string, Options) (int, error) { return ExitConfineFailed, ErrNotSupported }

// Harden is only supported on Linux.
func Harden(Identity, *Capabilities) error { return ErrNotSupported }
