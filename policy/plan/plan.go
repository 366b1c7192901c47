// Package plan holds what moat-init reads from the plan: the Landlock
// ruleset's types, its access levels, rule origins and compatibility modes,
// and moat-init's init modes. Package policy derives these values from a
// policy and an OCI spec; package confine applies them inside the container.
//
// The package imports no heavy package (no YAML, regexp or net packages, none
// at all in fact), so that moat-init, which every container start executes,
// stays small and starts fast. Package policy re-exports every name here.
package plan

// Landlock compatibility modes.
const (
	BestEffort      = "best_effort"
	HardRequirement = "hard_requirement"
)

// Init modes of moat-init (dev.moat.init).
const (
	// InitReap runs the program as a child and reaps orphans, as tini
	// does (the default).
	InitReap = "reap"
	// InitExec makes the program itself PID 1, for images that bring
	// their own init.
	InitExec = "exec"
)

// Plan access levels. Read-only is Landlock's execute, read-file and
// read-dir rights (OpenShell's `from_read`); read-write is every
// filesystem right the kernel's ABI knows (OpenShell's `from_all`).
const (
	AccessRO = "ro"
	AccessRW = "rw"
)

// Origins of plan rules: why a path is in the plan.
const (
	OriginPolicy     = "policy"     // listed in filesystem_policy
	OriginWorkdir    = "workdir"    // include_workdir: the spec's process.cwd
	OriginBaseline   = "baseline"   // OpenShell's baseline paths
	OriginSystem     = "system"     // /bin, /sbin, /lib64
	OriginEntrypoint = "entrypoint" // the spec's process.args[0]
	OriginMount      = "mount"      // a mount in the spec
	OriginDevice     = "device"     // a standard device node or a spec device
	OriginGPU        = "gpu"        // NVIDIA device nodes and files
)

// Plan is the Landlock ruleset moat-init applies inside the container. It is
// written as JSON next to moat-init and read there; moat-init opens every
// rule's path (before dropping privileges), adds it with the rule's rights
// and restricts itself.
type Plan struct {
	// Compatibility is best_effort or hard_requirement. Under
	// hard_requirement a rule whose path cannot be opened, or a kernel
	// without the needed Landlock ABI, fails the start; under best_effort
	// such rules are skipped and logged.
	Compatibility string `json:"compatibility"`
	// Rules, sorted by path, one per path.
	Rules []PlanRule `json:"rules"`
	// EntrypointInterpreter asks moat-init to resolve the program it is
	// about to execute the way execve and the shell would (a name without
	// a slash is looked up in PATH), add that file read-only unless a rule
	// already covers it, and, when the file starts with `#!`, add the
	// interpreter named on that line read-only too. Both are optional rules.
	// A plan cannot know this in advance: it is made without reading the
	// container's filesystem, and `moat exec` runs other programs under
	// the same plan.
	EntrypointInterpreter bool `json:"entrypoint_interpreter,omitempty"`
	// GPUDevices asks moat-init to add, read-write and optional, every
	// /dev/nvidia[0-9]+ present in the container at start: the NVIDIA
	// container hook creates device nodes that the spec does not list.
	GPUDevices bool `json:"gpu_devices,omitempty"`
}

// PlanRule grants rights on a path and everything beneath it.
type PlanRule struct {
	Path   string `json:"path"`
	Access string `json:"access"` // ro or rw
	// Optional rules are skipped silently when the path does not exist,
	// even under hard_requirement. Paths the policy lists are never
	// optional; baseline and spec-derived paths always are.
	Optional bool   `json:"optional,omitempty"`
	Origin   string `json:"origin,omitempty"`
}
