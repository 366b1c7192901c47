package policy

// DefaultPolicyName names the embedded default policy in logs and
// diagnostics.
const DefaultPolicyName = "embedded default policy"

// DefaultPolicyYAML is the policy moat applies when no annotation, no
// --policy flag and no admin default_policy names one: OpenShell's baseline
// filesystem (LandlockPlan adds what the spec itself needs), best_effort
// Landlock, the spec's own user (no process section), and no
// network_policies, so the sandbox reaches nothing except inference.local,
// and that only when the admin configuration has inference routes.
//
// The filesystem lists are empty on purpose: LandlockPlan adds OpenShell's
// baseline paths itself, as optional rules that images without /app or
// /sandbox skip silently, where listed paths would warn at every start.
const DefaultPolicyYAML = `# moat's embedded default policy.
version: 1
filesystem_policy:
  include_workdir: true
landlock:
  compatibility: best_effort
`

// DefaultPolicy returns the embedded default policy, the value Parse makes
// of DefaultPolicyYAML. Each call returns a new value the caller may change.
func DefaultPolicy() *Policy {
	return &Policy{
		Version:    Version,
		Filesystem: &Filesystem{IncludeWorkdir: true},
		Landlock:   Landlock{Compatibility: BestEffort},
		Network:    map[string]*NetworkPolicy{},
		Source:     DefaultPolicyName,
	}
}
