package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moatsandbox/moat/policy"
)

// DecideRequest decides one HTTP request on a connection: the connection
// must be allowed and some rule of a matching endpoint must allow the
// method, path and query. A GET rule also allows HEAD. A request no rule
// allows is denied when the governing L7 endpoint enforces, else audited.
// A connection none of whose matching endpoints inspects requests is not
// inspected: its requests get the connection's decision.
func (e *Engine) DecideRequest(ctx context.Context, req policy.Request) (policy.Decision, error) {
	c := e.cur.Load()
	if c == nil {
		return failed(ErrNoPolicy), ErrNoPolicy
	}
	v, err := c.verdict(ctx, &req.Input)
	if err != nil {
		return failed(err), err
	}
	d := v.decision(&req.Input)
	if !v.allow || v.l7 == nil {
		return d, nil
	}
	ok, err := c.requestAllowed(ctx, v, &req)
	if err != nil {
		return failed(err), err
	}
	if ok {
		return d, nil
	}
	d.Reason = policy.RequestReason(req.Method, req.Path)
	if !v.l7.Enforced() {
		d.Action = policy.Audit
		return d, nil
	}
	d.Action, d.Endpoint, d.AllowedIPs = policy.Deny, nil, nil
	return d, nil
}

// requestAllowed evaluates the HTTP rules of the verdict's endpoints.
func (c *compiled) requestAllowed(ctx context.Context, v *verdict, req *policy.Request) (bool, error) {
	if !v.hasRules {
		return false, nil
	}
	query := ast.NewObject()
	for name, values := range req.Query {
		vs := make([]*ast.Term, len(values))
		for i, s := range values {
			vs[i] = ast.StringTerm(s)
		}
		query.Insert(ast.StringTerm(name), ast.ArrayTerm(vs...))
	}
	refs := make([]*ast.Term, len(v.refs))
	for i, r := range v.refs {
		info := c.idx.endpoint(r)
		if info == nil {
			return false, fmt.Errorf("policy engine: no endpoint %d in policy %q", r.i, r.key)
		}
		refs[i] = info.term
	}
	input := ast.ObjectTerm(
		[2]*ast.Term{endpointsKey, ast.ArrayTerm(refs...)},
		[2]*ast.Term{methodKey, ast.StringTerm(strings.ToUpper(req.Method))},
		[2]*ast.Term{pathKey, ast.StringTerm(req.Path)},
		[2]*ast.Term{queryKey, ast.NewTerm(query)},
	)
	t, err := c.eval(ctx, c.request, input)
	if err != nil {
		return false, err
	}
	if t == nil {
		return false, nil
	}
	b, _ := t.Value.(ast.Boolean)
	return bool(b), nil
}
