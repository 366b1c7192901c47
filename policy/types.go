// Package policy is moat's policy model: OpenShell's `version: 1` sandbox
// policy (filesystem, Landlock, process identity and network policies) plus
// moat's own top-level additions (credentials, inference routes, inbound
// ports), parsed from YAML or JSON with positions kept for every key,
// validated with OpenShell's rules, and the pure derivations the runtime needs
// (Landlock plan, admin configuration, policy-source precedence).
//
// The package has no dependency on OPA: the decision engine lives in
// policy/engine and is reached through the Decider interface, so that the
// runtime binary, which every container start executes, stays small.
package policy

import (
	"net/netip"

	"github.com/moatsandbox/moat/policy/plan"
)

// Version is the only policy schema version moat (and OpenShell) accepts.
const Version = 1

// Landlock compatibility modes (see package plan).
const (
	BestEffort      = plan.BestEffort
	HardRequirement = plan.HardRequirement
)

// Endpoint enforcement modes. An endpoint without `enforcement` audits.
const (
	Enforce   = "enforce"
	AuditOnly = "audit"
)

// Endpoint protocols that enable request inspection.
const (
	ProtocolREST = "rest"
	ProtocolSQL  = "sql"
)

// TLS modes. `skip` relays the tunnel untouched; `terminate` and
// `passthrough` are accepted for compatibility and only warn.
const (
	TLSSkip        = "skip"
	TLSTerminate   = "terminate"
	TLSPassthrough = "passthrough"
)

// Access presets, expanded into rules at load time.
const (
	AccessReadOnly  = "read-only"
	AccessReadWrite = "read-write"
	AccessFull      = "full"
)

// Policy is a parsed and validated sandbox policy.
type Policy struct {
	Version    int
	Filesystem *Filesystem // nil when the document has no filesystem_policy
	Landlock   Landlock
	Process    *Process // nil when the document has no process section
	// Network maps a policy key to its network policy. The key (not the
	// optional name) identifies the policy in decisions and logs.
	Network map[string]*NetworkPolicy

	// moat additions.
	Credentials map[string]*Credential
	Inference   *Inference
	Ports       []uint16 // inbound ports forwarded into the sandbox

	// Source names the document ("policy.yaml", "annotation dev.moat.policy").
	Source string
}

// Filesystem is OpenShell's filesystem_policy.
type Filesystem struct {
	IncludeWorkdir bool
	ReadOnly       []string
	ReadWrite      []string
}

// Landlock holds the Landlock compatibility mode; empty means best_effort.
type Landlock struct {
	Compatibility string
}

// Hard reports whether Landlock must be fully enforced or the start fails.
func (l Landlock) Hard() bool { return l.Compatibility == HardRequirement }

// Process is the identity the sandboxed program runs as: a user or group
// name resolved in the container's /etc/passwd and /etc/group, or a numeric id.
type Process struct {
	RunAsUser  string
	RunAsGroup string
}

// NetworkPolicy allows its binaries to reach its endpoints.
type NetworkPolicy struct {
	Key       string // map key
	Name      string // display name; defaults to Key
	Endpoints []*Endpoint
	Binaries  []Binary
}

// Endpoint is one destination of a network policy.
type Endpoint struct {
	Host        string // exact host, `*.`/`**.` glob, or empty (hostless allowed_ips endpoint)
	Ports       []uint16
	Protocol    string // "", rest, sql
	TLS         string // "", skip, terminate, passthrough
	Enforcement string // "", enforce, audit (empty audits)
	Access      string // "", read-only, read-write, full
	// Rules are the endpoint's L7 allow rules, with the access preset
	// already expanded into them.
	Rules      []Rule
	AllowedIPs []netip.Prefix
}

// Enforced reports whether L7 denials on this endpoint are enforced rather
// than only audited.
func (e *Endpoint) Enforced() bool { return e.Enforcement == Enforce }

// HasL7 reports whether requests on this endpoint are inspected.
func (e *Endpoint) HasL7() bool { return e.Protocol != "" && len(e.Rules) > 0 }

// IsGlob reports whether the endpoint's host is a wildcard pattern.
func (e *Endpoint) IsGlob() bool { return IsHostGlob(e.Host) }

// Rule is one L7 allow rule.
type Rule struct {
	Method  string // HTTP method, case-insensitive; "*" is any
	Path    string // glob over `/`-separated segments; "**" is any
	Command string // SQL command (protocol sql); kept for compatibility
	// Query maps a query parameter to its matcher. Every value of a
	// configured parameter must match; unconfigured parameters are ignored.
	Query map[string]QueryMatcher
}

// QueryMatcher matches query parameter values: either one glob or any of a
// list of globs.
type QueryMatcher struct {
	Glob string
	Any  []string
}

// Globs returns the globs a value may match.
func (q QueryMatcher) Globs() []string {
	if q.Any != nil {
		return q.Any
	}
	return []string{q.Glob}
}

// Binary is a program allowed by a network policy: an absolute path or a
// glob with `/` as separator, matched against the calling executable or
// any of its ancestors.
type Binary struct {
	Path string
}

// Credential is a secret the sidecar holds and substitutes for a
// placeholder in requests to the hosts it is bound to.
type Credential struct {
	Name string
	// Env is the variable that carries the placeholder in the sandbox.
	Env string
	// Hosts the credential may be sent to (exact hosts or `*.` globs).
	Hosts []string
	// Source says where the real value comes from: "env:VAR" (the
	// runtime's environment) or "file:NAME" (a file in the admin
	// configuration's credentials directory).
	Source string
}

// Placeholder is the value the sandboxed process sees instead of the secret.
func (c *Credential) Placeholder() string { return PlaceholderPrefix + c.Name }

// PlaceholderPrefix starts every credential placeholder.
const PlaceholderPrefix = "moat:credential:"

// Inference configures the routing of `inference.local` to model backends.
type Inference struct {
	Routes []*Route
}

// Route is one inference backend, in OpenShell's routes-file shape.
type Route struct {
	Name         string
	Endpoint     string // http(s)://... or mock://...
	Model        string
	ProviderType string // openai (default), anthropic
	Protocols    []string
	APIKey       string
	APIKeyEnv    string
	TimeoutSecs  int
}

// Inference protocols a route may serve.
var InferenceProtocols = []string{
	"openai_chat_completions",
	"openai_completions",
	"openai_responses",
	"anthropic_messages",
	"model_discovery",
}
