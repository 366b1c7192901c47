package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moatsandbox/moat/policy"
)

// maxListedPolicies is the most policies an endpoint deny reason names one
// by one, as OpenShell does ("endpoint H:P not in policy 'a'; endpoint H:P
// not in policy 'b'"). With more, the reason would grow with the policy, so
// it is shortened to "endpoint H:P not in any of N policies".
const maxListedPolicies = 3

// verdict is the cacheable outcome of a connection decision: everything but
// the binary deny reason, which quotes the caller's command line.
type verdict struct {
	allow      bool
	policy     string           // matched policy key
	endpoint   *policy.Endpoint // governing endpoint, on allow
	allowedIPs []string
	refs       []ref            // matching endpoints of the matched policies
	l7         *policy.Endpoint // the first of them that inspects requests
	hasRules   bool             // some of them has HTTP rules

	// Deny: binaryDenied lists the policies that list the destination but
	// not the binary; else reason is the complete reason.
	binaryDenied []string
	reason       string
}

// Decide decides whether the process described by in may connect to
// in.Host:in.Port. The host is compared case-insensitively.
func (e *Engine) Decide(ctx context.Context, in policy.Input) (policy.Decision, error) {
	c := e.cur.Load()
	if c == nil {
		return failed(ErrNoPolicy), ErrNoPolicy
	}
	v, err := c.verdict(ctx, &in)
	if err != nil {
		return failed(err), err
	}
	return v.decision(&in), nil
}

func failed(err error) policy.Decision {
	return policy.Decision{Action: policy.Deny, Engine: Name, Reason: "policy evaluation failed: " + err.Error()}
}

// decision renders a verdict for one caller.
func (v *verdict) decision(in *policy.Input) policy.Decision {
	d := policy.Decision{Engine: Name, Policy: v.policy}
	if v.allow {
		d.Action, d.Endpoint = policy.Allow, v.endpoint
		d.AllowedIPs = slices.Clone(v.allowedIPs)
		return d
	}
	d.Action = policy.Deny
	if len(v.binaryDenied) == 0 {
		d.Reason = v.reason
		return d
	}
	var b strings.Builder
	for i, key := range v.binaryDenied {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(policy.BinaryReason(*in, key))
	}
	d.Reason = b.String()
	return d
}

// verdict returns the cached verdict for in, evaluating it on a miss.
func (c *compiled) verdict(ctx context.Context, in *policy.Input) (*verdict, error) {
	host := strings.ToLower(in.Host)
	var buf [256]byte
	key := appendKey(buf[:0], host, in)
	if v := c.cache.get(key); v != nil {
		return v, nil
	}
	v, err := c.evaluate(ctx, host, in)
	if err != nil {
		return nil, err
	}
	c.cache.put(key, v)
	return v, nil
}

// Input and result keys.
var (
	hostKey         = ast.StringTerm("host")
	hostPortKey     = ast.StringTerm("host_port")
	hostlessPortKey = ast.StringTerm("hostless_port")
	globBucketsKey  = ast.StringTerm("glob_buckets")
	pathsKey        = ast.StringTerm("paths")
	lookupsKey      = ast.StringTerm("lookups")
	lookupsExact    = ast.StringTerm("exact")
	lookupsAll      = ast.StringTerm("all")
	endpointsKey    = ast.StringTerm("endpoints")
	methodKey       = ast.StringTerm("method")
	pathKey         = ast.StringTerm("path")
	queryKey        = ast.StringTerm("query")
)

// evaluate decides a connection without the cache.
func (c *compiled) evaluate(ctx context.Context, host string, in *policy.Input) (*verdict, error) {
	x := c.idx
	if len(x.keys) == 0 {
		return &verdict{reason: policy.ReasonNoPolicies}, nil
	}
	// Name only the lookups that can succeed, and do not ask OPA when
	// there are none: no endpoint lists the destination.
	port, ok := x.ports[in.Port]
	if !ok {
		return &verdict{reason: endpointReason(host, in.Port, x.keys)}, nil
	}
	var buf [256]byte
	hostPort := append(append(append(buf[:0], host...), ':'), port...)
	exact := x.exactKeys[string(hostPort)]
	hostless := x.hostlessPorts[port]
	buckets := x.bucketsFor(host, port)
	if !exact && !hostless && len(buckets) == 0 {
		return &verdict{reason: endpointReason(host, in.Port, x.keys)}, nil
	}
	paths := make([]*ast.Term, 0, 1+len(in.Ancestors))
	paths = append(paths, ast.StringTerm(in.Binary.Path))
	for _, a := range in.Ancestors {
		paths = append(paths, ast.StringTerm(a.Path))
	}
	items := make([][2]*ast.Term, 0, 6)
	items = append(items,
		[2]*ast.Term{hostKey, ast.StringTerm(host)},
		[2]*ast.Term{pathsKey, ast.ArrayTerm(paths...)},
	)
	if exact {
		items = append(items, [2]*ast.Term{hostPortKey, ast.StringTerm(string(hostPort))})
	}
	if hostless {
		items = append(items, [2]*ast.Term{hostlessPortKey, ast.StringTerm(port)})
	}
	if len(buckets) > 0 {
		items = append(items, [2]*ast.Term{globBucketsKey, ast.ArrayTerm(buckets...)})
	}
	if hostless || len(buckets) > 0 {
		items = append(items, [2]*ast.Term{lookupsKey, lookupsAll})
	} else {
		items = append(items, [2]*ast.Term{lookupsKey, lookupsExact})
	}
	input := ast.NewObject(items...)
	t, err := c.eval(ctx, c.conn, input)
	if err != nil {
		return nil, err
	}
	var res *ast.Array
	if t != nil {
		res, _ = t.Value.(*ast.Array)
	}
	if res == nil || res.Len() != 2 {
		return nil, fmt.Errorf("eval rego: %s undefined or not a pair", connQuery)
	}
	return x.verdict(res, host, in.Port)
}

// verdict reads the Rego decision: the candidate endpoints (host and port
// match) and, among them, the endpoints whose policy allows the binary.
func (x *index) verdict(res *ast.Array, host string, port uint16) (*verdict, error) {
	endpoints, err := refsOf(res.Elem(1))
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		candidates, err := refsOf(res.Elem(0))
		if err != nil {
			return nil, err
		}
		v := &verdict{}
		if len(candidates) == 0 {
			v.reason = endpointReason(host, port, x.keys)
			return v, nil
		}
		for _, r := range candidates { // sorted by key
			if !slices.Contains(v.binaryDenied, r.key) {
				v.binaryDenied = append(v.binaryDenied, r.key)
			}
		}
		return v, nil
	}
	// Allowed. The matched policy is the smallest key; the endpoints count
	// in key then document order.
	v := &verdict{allow: true, policy: endpoints[0].key, refs: endpoints}
	var first, extended *policy.Endpoint
	for _, r := range endpoints {
		info := x.endpoint(r)
		if info == nil {
			return nil, fmt.Errorf("eval rego: bad endpoint reference %v", r)
		}
		if first == nil {
			first = info.ep
		}
		if extended == nil && info.extended {
			extended = info.ep
		}
		if v.l7 == nil && info.ep.HasL7() {
			v.l7 = info.ep
		}
		v.hasRules = v.hasRules || info.rules
		for _, ip := range info.ips {
			if !slices.Contains(v.allowedIPs, ip) {
				v.allowedIPs = append(v.allowedIPs, ip)
			}
		}
	}
	v.endpoint = first
	if extended != nil {
		v.endpoint = extended
	}
	return v, nil
}

// endpointReason explains a destination no policy lists (see
// maxListedPolicies).
func endpointReason(host string, port uint16, keys []string) string {
	if len(keys) > maxListedPolicies {
		return fmt.Sprintf("endpoint %s:%d not in any of %d policies", host, port, len(keys))
	}
	reasons := make([]string, len(keys))
	for i, key := range keys {
		reasons[i] = policy.EndpointReason(host, port, key)
	}
	return strings.Join(reasons, "; ")
}

// refsOf reads an array of [policy key, endpoint index] references and
// sorts them by key then index.
func refsOf(t *ast.Term) ([]ref, error) {
	var arr *ast.Array
	if t != nil {
		arr, _ = t.Value.(*ast.Array)
	}
	if arr == nil {
		return nil, fmt.Errorf("eval rego: expected an array of endpoints, got %v", t)
	}
	refs := make([]ref, 0, arr.Len())
	for i := range arr.Len() {
		elem := arr.Elem(i)
		pair, ok := elem.Value.(*ast.Array)
		if !ok || pair.Len() != 2 {
			return nil, fmt.Errorf("eval rego: bad endpoint reference %v", elem)
		}
		key, ok1 := pair.Elem(0).Value.(ast.String)
		n, ok2 := pair.Elem(1).Value.(ast.Number)
		idx, ok3 := n.Int()
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("eval rego: bad endpoint reference %v", elem)
		}
		refs = append(refs, ref{key: string(key), i: idx})
	}
	slices.SortFunc(refs, func(a, b ref) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.i - b.i
	})
	return refs, nil
}
