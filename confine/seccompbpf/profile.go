package seccompbpf

import (
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Filter flags a profile may ask for, as SECCOMP_FILTER_FLAG_* bits.
// SECCOMP_FILTER_FLAG_TSYNC is accepted and implied: moat-init always
// synchronises every thread.
var filterFlags = map[specs.LinuxSeccompFlag]uint32{
	"SECCOMP_FILTER_FLAG_TSYNC":            0,
	specs.LinuxSeccompFlagLog:              0x2,
	specs.LinuxSeccompFlagSpecAllow:        0x4,
	specs.LinuxSeccompFlagWaitKillableRecv: 0x20,
}

func programFlags(flags []specs.LinuxSeccompFlag) (uint32, error) {
	var out uint32
	for _, f := range flags {
		bit, ok := filterFlags[f]
		if !ok {
			return 0, fmt.Errorf("unknown seccomp flag %q", f)
		}
		out |= bit
	}
	return out, nil
}

func checkNotify(p *specs.LinuxSeccomp) error {
	if p.ListenerPath != "" || p.DefaultAction == specs.ActNotify {
		return ErrNotify
	}
	for _, sc := range p.Syscalls {
		if sc.Action == specs.ActNotify {
			return fmt.Errorf("%w (syscalls %s)", ErrNotify, strings.Join(sc.Names, ", "))
		}
	}
	return nil
}

// archName maps an OCI architecture (SCMP_ARCH_X86_64) to libseccomp's
// name (x86_64).
func archName(a specs.Arch) string {
	return strings.ToLower(strings.TrimPrefix(string(a), "SCMP_ARCH_"))
}
