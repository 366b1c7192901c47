//go:build !cgo || !linux

package seccompbpf

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/confine"
)

// Compile needs cgo and libseccomp; this build has neither.
func Compile(profile *specs.LinuxSeccomp) (*confine.SeccompProgram, error) {
	if profile != nil {
		if err := checkNotify(profile); err != nil {
			return nil, err
		}
	}
	return nil, ErrNoLibseccomp
}

// libraryVersion is "" without libseccomp: nothing is cached.
func libraryVersion() string { return "" }
