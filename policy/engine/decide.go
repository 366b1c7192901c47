package engine

import (
	"context"
	"fmt"
	"slices"
	"strconv"
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

	refsBuf [1]ref // backs refs when one endpoint matches, the common case
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
	exact := x.exactKeys[string(hostPort)].key
	hostless := x.hostlessPorts[port].key
	var bucketBuf [4]*ast.Term
	buckets := x.bucketsFor(bucketBuf[:0], host, port)
	if exact == nil && hostless == nil && len(buckets) == 0 {
		return &verdict{reason: endpointReason(host, in.Port, x.keys)}, nil
	}
	// The input names the lookups that can succeed (see moat.rego); the
	// two common cases, the exact lookup alone and host globs alone, fill
	// in a pooled document.
	var t *ast.Term
	var err error
	switch {
	case hostless == nil && len(buckets) == 0:
		input := exactInputs.Get().(*pooledInput)
		t, err = c.eval(ctx, c.conn, input.setExact(x, exact, in))
		exactInputs.Put(input)
	case hostless == nil && exact == nil:
		input := globInputs.Get().(*pooledInput)
		t, err = c.eval(ctx, c.conn, input.setGlobs(x, host, buckets, in))
		globInputs.Put(input)
	default:
		t, err = c.eval(ctx, c.conn, allInput(x, host, exact, hostless, buckets, in))
	}
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
	v := &verdict{}
	endpoints, err := refsOf(v.refsBuf[:0], res.Elem(1))
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		var buf [4]ref
		candidates, err := refsOf(buf[:0], res.Elem(0))
		if err != nil {
			return nil, err
		}
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
	v.allow, v.policy, v.refs = true, endpoints[0].key, endpoints
	var first, extended *policy.Endpoint
	for _, r := range endpoints {
		info := x.endpoint(r)
		if info == nil {
			return nil, fmt.Errorf("eval rego: no endpoint %d in policy %q", r.i, r.key)
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
		var buf [128]byte
		b := append(append(append(buf[:0], "endpoint "...), host...), ':')
		b = append(strconv.AppendUint(b, uint64(port), 10), " not in any of "...)
		b = append(strconv.AppendInt(b, int64(len(keys)), 10), " policies"...)
		return string(b)
	}
	reasons := make([]string, len(keys))
	for i, key := range keys {
		reasons[i] = policy.EndpointReason(host, port, key)
	}
	return strings.Join(reasons, "; ")
}

// refsOf appends to dst the references of an array or set of endpoint
// entries (see data.go), sorted by key then index.
func refsOf(dst []ref, t *ast.Term) ([]ref, error) {
	switch v := t.Value.(type) {
	case *ast.Array:
		dst = slices.Grow(dst, v.Len())
		for i := range v.Len() {
			r, err := refOf(v.Elem(i))
			if err != nil {
				return nil, err
			}
			dst = append(dst, r)
		}
	case ast.Set:
		elems := v.Slice()
		dst = slices.Grow(dst, len(elems))
		for _, elem := range elems {
			r, err := refOf(elem)
			if err != nil {
				return nil, err
			}
			dst = append(dst, r)
		}
	default:
		return nil, fmt.Errorf("eval rego: expected an array or set of endpoints, got %v", ast.TypeName(t.Value))
	}
	slices.SortFunc(dst, func(a, b ref) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return a.i - b.i
	})
	return dst, nil
}

// refOf reads the policy key and endpoint index of an endpoint entry.
func refOf(t *ast.Term) (ref, error) {
	if entry, ok := t.Value.(*ast.Array); ok && entry.Len() == entryLen {
		key, ok1 := entry.Elem(0).Value.(ast.String)
		num, ok2 := entry.Elem(1).Value.(ast.Number)
		i, ok3 := num.Int()
		if ok1 && ok2 && ok3 {
			return ref{key: string(key), i: i}, nil
		}
	}
	return ref{}, fmt.Errorf("eval rego: bad endpoint entry of type %v", ast.TypeName(t.Value))
}
