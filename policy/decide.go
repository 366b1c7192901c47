package policy

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// Decider decides connections and requests against a loaded policy. The OPA
// engine (policy/engine) implements it; callers such as the proxy depend only
// on this interface so they can be tested without OPA.
type Decider interface {
	// Decide decides a connection (L4): may this process reach host:port?
	Decide(ctx context.Context, in Input) (Decision, error)
	// DecideRequest decides one HTTP request inside an allowed connection
	// to an endpoint with L7 rules.
	DecideRequest(ctx context.Context, req Request) (Decision, error)
}

// Exe identifies one executable: the path of /proc/PID/exe as the
// container sees it, and a fingerprint of the file's content (its SHA-256,
// or any string that changes when the file does). The fingerprint never
// grants access; it keeps cached decisions from outliving a replaced binary.
type Exe struct {
	Path        string
	Fingerprint string
}

// Input is what a connection decision is made on.
type Input struct {
	Binary Exe
	// Ancestors are the binary's parent, grandparent, ... up to the
	// sandbox's init (excluded).
	Ancestors []Exe
	// CmdlinePaths are absolute paths found in the argv of the process and
	// its ancestors. They never grant access; they only explain denials.
	CmdlinePaths []string
	Host         string
	Port         uint16
}

// Request is an L7 decision's input: the connection's identity and
// destination plus one HTTP request.
type Request struct {
	Input
	Method string
	Path   string // without the query string
	Query  url.Values
}

// Action is a decision's outcome.
type Action string

// Actions. Audit means a rule would have denied the request but the
// endpoint is in audit mode, so it is let through and logged.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
	Audit Action = "audit"
)

// Decision is the outcome of Decide or DecideRequest.
type Decision struct {
	Action Action
	// Policy is the key of the matched network policy (the
	// lexicographically smallest key when several match); empty when none.
	Policy string
	// Endpoint is the configuration that governs the connection once it is
	// allowed: the first matching endpoint, in policy-key then document
	// order, that sets protocol, tls or allowed_ips, else the first
	// matching endpoint. Nil on deny.
	Endpoint *Endpoint
	// AllowedIPs is the union of allowed_ips over every matching endpoint
	// of every matched policy; the SSRF guard consults it.
	AllowedIPs []string
	Reason     string
	Engine     string // "opa"
}

// Allowed reports whether the connection or request may proceed (an audit
// decision proceeds).
func (d Decision) Allowed() bool { return d.Action == Allow || d.Action == Audit }

// Deny reasons, worded as OpenShell words them.
const ReasonNoPolicies = "network connections not allowed by policy"

// EndpointReason explains a destination that no policy lists.
func EndpointReason(host string, port uint16, policyKey string) string {
	return fmt.Sprintf("endpoint %s:%d not in policy '%s'", host, port, policyKey)
}

// BinaryReason explains a binary that a policy listing the destination
// does not allow.
func BinaryReason(in Input, policyKey string) string {
	anc := make([]string, len(in.Ancestors))
	for i, a := range in.Ancestors {
		anc[i] = a.Path
	}
	return fmt.Sprintf("binary '%s' not allowed in policy '%s' (ancestors: [%s], cmdline: [%s])",
		in.Binary.Path, policyKey, strings.Join(anc, ", "), strings.Join(in.CmdlinePaths, ", "))
}

// RequestReason explains an HTTP request no rule allows.
func RequestReason(method, path string) string {
	return fmt.Sprintf("%s %s not permitted by policy", method, path)
}
