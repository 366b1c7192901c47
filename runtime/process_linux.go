package runtime

import (
	"fmt"
	"strings"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// toLibcontainer converts a spec process into the libcontainer process
// that runs it. Every field is carried over, including those the
// container's configuration also holds (capabilities, rlimits, ...): for an
// exec'd process, flags may have changed them, and the process's values
// take precedence in libcontainer.
func toLibcontainer(sp *specs.Process) (*libcontainer.Process, error) {
	limits, err := toRlimits(sp.Rlimits)
	if err != nil {
		return nil, err
	}
	affinity, err := configs.ConvertCPUAffinity(sp.ExecCPUAffinity)
	if err != nil {
		return nil, fmt.Errorf("execCPUAffinity: %w", err)
	}
	user := sp.User
	p := &libcontainer.Process{
		Args:        sp.Args,
		Env:         sp.Env,
		Cwd:         sp.Cwd,
		UID:         int(user.UID),
		GID:         int(user.GID),
		Rlimits:     limits,
		CPUAffinity: affinity,
		Scheduler:   sp.Scheduler,
		IOPriority:  sp.IOPriority,
		// Security attributes.
		NoNewPrivileges: &sp.NoNewPrivileges,
		AppArmorProfile: sp.ApparmorProfile,
		Label:           sp.SelinuxLabel,
	}
	for _, gid := range user.AdditionalGids {
		p.AdditionalGroups = append(p.AdditionalGroups, int(gid))
	}
	if size := sp.ConsoleSize; size != nil {
		p.ConsoleWidth, p.ConsoleHeight = uint16(size.Width), uint16(size.Height)
	}
	if c := sp.Capabilities; c != nil {
		p.Capabilities = &configs.Capabilities{
			Bounding:    c.Bounding,
			Effective:   c.Effective,
			Permitted:   c.Permitted,
			Inheritable: c.Inheritable,
			Ambient:     c.Ambient,
		}
	}
	return p, nil
}

// rlimitResources maps the runtime-spec's rlimit types, without their
// "RLIMIT_" prefix, to the kernel's resource numbers.
var rlimitResources = map[string]int{
	"AS": unix.RLIMIT_AS, "CORE": unix.RLIMIT_CORE, "CPU": unix.RLIMIT_CPU,
	"DATA": unix.RLIMIT_DATA, "FSIZE": unix.RLIMIT_FSIZE, "LOCKS": unix.RLIMIT_LOCKS,
	"MEMLOCK": unix.RLIMIT_MEMLOCK, "MSGQUEUE": unix.RLIMIT_MSGQUEUE, "NICE": unix.RLIMIT_NICE,
	"NOFILE": unix.RLIMIT_NOFILE, "NPROC": unix.RLIMIT_NPROC, "RSS": unix.RLIMIT_RSS,
	"RTPRIO": unix.RLIMIT_RTPRIO, "RTTIME": unix.RLIMIT_RTTIME,
	"SIGPENDING": unix.RLIMIT_SIGPENDING, "STACK": unix.RLIMIT_STACK,
}

func toRlimits(in []specs.POSIXRlimit) ([]configs.Rlimit, error) {
	var out []configs.Rlimit
	for _, l := range in {
		name, ok := strings.CutPrefix(l.Type, "RLIMIT_")
		resource, known := rlimitResources[name]
		if !ok || !known {
			return nil, fmt.Errorf("wrong rlimit value: %s", l.Type)
		}
		out = append(out, configs.Rlimit{Type: resource, Soft: l.Soft, Hard: l.Hard})
	}
	return out, nil
}
