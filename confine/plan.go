package confine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/moatsandbox/moat/policy/plan"
)

// Paths inside the container. The runtime bind-mounts moat-init and the plan
// read-only at these paths (hooks.Rewrite adds the mounts).
const (
	InitPath = "/.moat/init"
	PlanPath = "/.moat/plan.json"
)

// ExecFlag, before the program's arguments, makes moat-init exec the
// program whatever the plan's mode: the runtime starts the processes of
// `moat exec` with it.
const ExecFlag = "--exec"

// PlanVersion is the version of the Plan JSON this package writes and reads.
// moat-init refuses a plan of another version rather than guessing.
const PlanVersion = 1

// Init modes (the values of the dev.moat.init annotation).
const (
	ModeReap = plan.InitReap // fork the program, forward signals, reap orphans
	ModeExec = plan.InitExec // exec the program: it becomes PID 1
)

// Plan is everything moat-init applies, decided by `moat create` and written
// as JSON to the file bind-mounted at PlanPath. It is pure data: moat-init
// makes no decision the plan does not spell out.
//
// moat-init applies it in this order, on its locked main thread: NetNS,
// Landlock (every path opened first, then restrict), Seccomp (in order),
// identity (groups, gid, uid, Capabilities), NoNewPrivileges, then exec or
// reap according to Mode.
type Plan struct {
	Version int    `json:"version"`
	Mode    string `json:"mode"` // ModeReap (default when empty) or ModeExec

	// NetNS, when set, makes moat-init join a network namespace from an
	// inherited file descriptor and check its inode before anything else.
	// Reserved for the network issue; nil means stay where the runtime put
	// the process.
	NetNS *NetNS `json:"netns,omitempty"`

	// Ready, when set, names a FIFO the container's first process
	// inherits: moat-init writes one byte to it once it is in the planned
	// network namespace (exec mode) or, in reap mode, once it relays
	// signals to the program it started; `moat start` waits for that
	// byte. Processes that do not inherit it (exec'd ones) skip the signal.
	Ready *Ready `json:"ready,omitempty"`

	// Landlock is the filesystem ruleset (policy.LandlockPlan). nil means
	// no Landlock at all (moat-init says so loudly on stderr).
	Landlock *plan.Plan `json:"landlock,omitempty"`

	// Seccomp holds classic BPF programs in load order: the container's own
	// profile compiled at create time (if the spec has one), then moat's
	// filter (MoatFilter).
	Seccomp []SeccompProgram `json:"seccomp,omitempty"`

	// Identity is the user the program runs as, resolved numerically.
	Identity Identity `json:"identity"`

	// Capabilities are the program's final capability sets, OCI names
	// ("CAP_NET_BIND_SERVICE"). nil means every set empty.
	Capabilities *Capabilities `json:"capabilities,omitempty"`

	// NoNewPrivileges is the spec's process.noNewPrivileges.
	NoNewPrivileges bool `json:"no_new_privileges,omitempty"`

	// Env holds KEY=VALUE entries that override the program's environment
	// (MOAT_SANDBOX, and HOME/USER when the policy changes the user). They
	// also reach processes started by `moat exec`, whose environment comes
	// from the engine and not from the spec.
	Env []string `json:"env,omitempty"`
}

// NetNS names the network namespace moat-init joins: an fd it inherits (never
// a path the agent could see) and the nsfs inode that fd must have. FD 0
// means "whichever inherited fd above 2 is that namespace": the runtime
// appends the fd after the engine's preserved fds, whose count differs
// between the first process and each exec.
type NetNS struct {
	FD    int    `json:"fd,omitempty"`
	Inode uint64 `json:"inode"`
}

// Ready identifies the start-readiness FIFO by its inode.
type Ready struct {
	Inode uint64 `json:"inode"`
}

// SeccompProgram is one classic BPF seccomp program.
type SeccompProgram struct {
	// Name says where the program comes from, for error messages:
	// "container" or "moat".
	Name string `json:"name"`
	// Flags are extra SECCOMP_FILTER_FLAG_* bits (LOG, SPEC_ALLOW,
	// WAIT_KILLABLE_RECV). moat-init adds TSYNC in reap mode.
	Flags uint32 `json:"flags,omitempty"`
	// Instructions are struct sock_filter entries in host byte order, 8
	// bytes each (JSON: base64).
	Instructions []byte `json:"instructions"`
}

// Len is the number of instructions in the program.
func (p SeccompProgram) Len() int { return len(p.Instructions) / 8 }

// Validate checks that the program is a whole number of instructions, 1
// to the kernel's BPF_MAXINSNS.
func (p SeccompProgram) Validate() error {
	if len(p.Instructions) == 0 || len(p.Instructions)%8 != 0 || p.Len() > maxBPFLen {
		return fmt.Errorf("seccomp program %q has %d bytes, not 1 to %d instructions", p.Name, len(p.Instructions), maxBPFLen)
	}
	return nil
}

// Identity is a resolved user: numeric ids plus the name and home directory
// from the container's /etc/passwd when it has an entry.
type Identity struct {
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additional_gids,omitempty"`
	Username       string   `json:"username,omitempty"`
	Home           string   `json:"home,omitempty"`
}

// Capabilities are the five capability sets, as in the OCI spec.
type Capabilities struct {
	Bounding    []string `json:"bounding,omitempty"`
	Effective   []string `json:"effective,omitempty"`
	Permitted   []string `json:"permitted,omitempty"`
	Inheritable []string `json:"inheritable,omitempty"`
	Ambient     []string `json:"ambient,omitempty"`
}

// Validate checks what moat-init cannot apply: an unknown version or mode,
// an unknown capability name, a seccomp program that is not a whole number
// of instructions.
func (p *Plan) Validate() error {
	if p.Version != PlanVersion {
		return fmt.Errorf("plan version %d is not supported (this moat-init reads version %d)", p.Version, PlanVersion)
	}
	switch p.Mode {
	case "", ModeReap, ModeExec:
	default:
		return fmt.Errorf("plan: unknown mode %q (expected %s or %s)", p.Mode, ModeReap, ModeExec)
	}
	if p.NetNS != nil && ((p.NetNS.FD != 0 && p.NetNS.FD < 3) || p.NetNS.Inode == 0) {
		return fmt.Errorf("plan: netns needs an inherited fd above 2 (or 0 to find it) and an inode, got fd %d inode %d", p.NetNS.FD, p.NetNS.Inode)
	}
	if p.Landlock != nil {
		switch p.Landlock.Compatibility {
		case "", plan.BestEffort, plan.HardRequirement:
		default:
			return fmt.Errorf("plan: unknown landlock compatibility %q", p.Landlock.Compatibility)
		}
		for _, r := range p.Landlock.Rules {
			if r.Access != plan.AccessRO && r.Access != plan.AccessRW {
				return fmt.Errorf("plan: landlock rule %s: unknown access %q", r.Path, r.Access)
			}
			if !strings.HasPrefix(r.Path, "/") {
				return fmt.Errorf("plan: landlock rule %q is not absolute", r.Path)
			}
		}
	}
	for _, prog := range p.Seccomp {
		if err := prog.Validate(); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	if c := p.Capabilities; c != nil {
		for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
			if _, err := CapMask(set); err != nil {
				return fmt.Errorf("plan: %w", err)
			}
		}
	}
	for _, kv := range p.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("plan: env entry %q is not KEY=VALUE", kv)
		}
	}
	return nil
}

// maxBPFLen is the kernel's BPF_MAXINSNS.
const maxBPFLen = 4096

// Marshal encodes the plan as indented JSON.
func (p *Plan) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	return append(data, '\n'), nil
}

// maxPlanSize bounds what ParsePlan reads: a compiled Docker profile is about
// 10 KiB of base64.
const maxPlanSize = 4 << 20

// ParsePlan decodes and validates a plan (see decodePlan: the JSON that
// Marshal writes, without encoding/json). Unknown fields are an error: a
// plan from a newer moat must not be half-applied.
func ParsePlan(data []byte) (*Plan, error) {
	if len(data) > maxPlanSize {
		return nil, fmt.Errorf("plan is %d bytes, more than %d", len(data), maxPlanSize)
	}
	p, err := decodePlan(data)
	if err != nil {
		return nil, fmt.Errorf("decode plan: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// ReadPlan reads and validates the plan file at path.
func ReadPlan(path string) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	return ParsePlan(data)
}

// WritePlan writes the plan to path (mode 0644, replaced atomically), where
// the runtime bind-mounts it from. The directory must exist.
func WritePlan(path string, p *Plan) (retErr error) {
	if err := p.Validate(); err != nil {
		return err
	}
	data, err := p.Marshal()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write plan: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	return nil
}

// ErrNotSupported is returned by the parts of this package that need Linux.
var ErrNotSupported = errors.New("confinement is only supported on Linux")
