package engine

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moatsandbox/moat/policy"
)

// This file holds a reference evaluator, written straight from the
// semantics (loops over every policy, endpoint, binary and rule, and a
// hand-written glob matcher), and FuzzDecide, which checks the OPA engine
// against it.

// refGlob matches s against a glob made of literals, `*` (any run without
// sep), `**` (any run) and `?` (one character but sep); sep 0 means none.
// Character classes and braces are not supported: the fuzz policy has none.
func refGlob(pattern, s string, sep rune) bool {
	if pattern == "" {
		return s == ""
	}
	switch {
	case strings.HasPrefix(pattern, "**"):
		for i := 0; i <= len(s); i++ {
			if refGlob(pattern[2:], s[i:], sep) {
				return true
			}
		}
		return false
	case pattern[0] == '*':
		for i := 0; ; {
			if refGlob(pattern[1:], s[i:], sep) {
				return true
			}
			if i == len(s) {
				return false
			}
			r, n := utf8.DecodeRuneInString(s[i:])
			if sep != 0 && r == sep {
				return false
			}
			i += n
		}
	case pattern[0] == '?':
		if s == "" {
			return false
		}
		r, n := utf8.DecodeRuneInString(s)
		if sep != 0 && r == sep {
			return false
		}
		return refGlob(pattern[1:], s[n:], sep)
	default:
		return s != "" && s[0] == pattern[0] && refGlob(pattern[1:], s[1:], sep)
	}
}

func refEndpointMatches(e *policy.Endpoint, host string, port uint16) bool {
	if !slices.Contains(e.Ports, port) {
		return false
	}
	if e.Host == "" && len(e.AllowedIPs) > 0 {
		return true
	}
	if policy.IsHostGlob(e.Host) {
		return refGlob(strings.ToLower(e.Host), host, '.')
	}
	return strings.ToLower(e.Host) == host
}

func refBinaryAllowed(np *policy.NetworkPolicy, in policy.Input) bool {
	paths := []string{in.Binary.Path}
	for _, a := range in.Ancestors {
		paths = append(paths, a.Path)
	}
	for _, b := range np.Binaries {
		for _, path := range paths {
			if policy.IsHostGlob(b.Path) && refGlob(b.Path, path, '/') || !policy.IsHostGlob(b.Path) && b.Path == path {
				return true
			}
		}
	}
	return false
}

// refDecide decides a connection; it also returns the matching endpoints
// of the matched policies, for refDecideRequest.
func refDecide(p *policy.Policy, in policy.Input) (policy.Decision, []*policy.Endpoint) {
	d := policy.Decision{Action: policy.Deny, Engine: "opa"}
	if len(p.Network) == 0 {
		d.Reason = policy.ReasonNoPolicies
		return d, nil
	}
	host := strings.ToLower(in.Host)
	var keys, listing, matched []string
	for k := range p.Network {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var endpoints []*policy.Endpoint
	for _, k := range keys {
		np := p.Network[k]
		var m []*policy.Endpoint
		for _, e := range np.Endpoints {
			if refEndpointMatches(e, host, in.Port) {
				m = append(m, e)
			}
		}
		if len(m) == 0 {
			continue
		}
		listing = append(listing, k)
		if refBinaryAllowed(np, in) {
			matched = append(matched, k)
			endpoints = append(endpoints, m...)
		}
	}
	if len(matched) == 0 {
		var reasons []string
		switch {
		case len(listing) > 0:
			for _, k := range listing {
				reasons = append(reasons, policy.BinaryReason(in, k))
			}
		case len(keys) > 3:
			reasons = append(reasons, fmt.Sprintf("endpoint %s:%d not in any of %d policies", host, in.Port, len(keys)))
		default:
			for _, k := range keys {
				reasons = append(reasons, policy.EndpointReason(host, in.Port, k))
			}
		}
		d.Reason = strings.Join(reasons, "; ")
		return d, nil
	}
	d.Action, d.Policy, d.Endpoint = policy.Allow, matched[0], endpoints[0]
	for _, e := range endpoints {
		if e.Protocol != "" || e.TLS != "" || len(e.AllowedIPs) > 0 {
			d.Endpoint = e
			break
		}
	}
	for _, e := range endpoints {
		for _, ip := range e.AllowedIPs {
			if !slices.Contains(d.AllowedIPs, ip.String()) {
				d.AllowedIPs = append(d.AllowedIPs, ip.String())
			}
		}
	}
	return d, endpoints
}

func refRuleAllows(r policy.Rule, req policy.Request) bool {
	want, got := strings.ToUpper(r.Method), strings.ToUpper(req.Method)
	if r.Method == "" || !(want == "*" || want == got || want == "GET" && got == "HEAD") {
		return false
	}
	if r.Path != "**" && !refGlob(r.Path, req.Path, '/') {
		return false
	}
	for name, m := range r.Query {
		values := req.Query[name]
		if len(values) == 0 {
			return false
		}
		for _, v := range values {
			if !slices.ContainsFunc(m.Globs(), func(g string) bool { return refGlob(g, v, 0) }) {
				return false
			}
		}
	}
	return true
}

func refDecideRequest(p *policy.Policy, req policy.Request) policy.Decision {
	d, endpoints := refDecide(p, req.Input)
	if d.Action != policy.Allow {
		return d
	}
	var governing *policy.Endpoint
	for _, e := range endpoints {
		if e.HasL7() {
			governing = e
			break
		}
	}
	if governing == nil {
		return d // nothing inspects the connection's requests
	}
	for _, e := range endpoints {
		for _, r := range e.Rules {
			if refRuleAllows(r, req) {
				return d
			}
		}
	}
	d.Reason = policy.RequestReason(req.Method, req.Path)
	if !governing.Enforced() {
		d.Action = policy.Audit
		return d
	}
	d.Action, d.Endpoint, d.AllowedIPs = policy.Deny, nil, nil
	return d
}

// fuzzPolicy covers every kind of endpoint and binary the reference
// matcher understands: exact hosts in mixed case, `*.` and `**.` globs, a
// glob in the middle, a glob without literal labels, a hostless endpoint,
// overlapping policies, and exact, `*`, `?` and `**` binaries.
func fuzzPolicy() *policy.Policy {
	rest := func(host string, ports []uint16, enforcement string, rules ...policy.Rule) *policy.Endpoint {
		return &policy.Endpoint{Host: host, Ports: ports, Protocol: policy.ProtocolREST, Enforcement: enforcement, Rules: rules}
	}
	return pol(map[string]*policy.NetworkPolicy{
		"api": np(eps(
			ep("api.example.com", 443),
			rest("*.example.com", []uint16{443, 8443}, policy.Enforce,
				rule("GET", "/v1/**"),
				policy.Rule{Method: "POST", Path: "/v1/items/*", Query: map[string]policy.QueryMatcher{"tag": {Glob: "foo-*"}}},
				policy.Rule{Method: "PUT", Path: "/v?/x", Query: map[string]policy.QueryMatcher{"tag": {Any: []string{"a*", "*b"}}}},
			),
		), "/usr/bin/curl", "/usr/bin/python3.1?"),
		"cdn": np(eps(
			&policy.Endpoint{Host: "**.cdn.net", Ports: []uint16{443, 80}, TLS: policy.TLSSkip},
			withIPs(rest("API.Example.com", []uint16{443}, "", rule("get", "**")), "203.0.113.0/24"),
		), "/usr/bin/*"),
		"internal": np(eps(
			withIPs(&policy.Endpoint{Ports: []uint16{8080}}, "10.0.0.0/8", "192.168.1.1/32"),
			ep("*.internal", 8080),
			ep("svc-*", 8080),
		), "/opt/**/bin/tool", "/usr/bin/bash"),
		"wild": np(eps(
			ep("api.*.example.io", 443),
			withIPs(ep("Mixed.Case.ORG", 8443), "10.0.0.0/8"),
		), "/**"),
	})
}

func FuzzDecide(f *testing.F) {
	seeds := []struct {
		host      string
		port      uint16
		exe, anc  string
		method    string
		path, tag string
	}{
		{"api.example.com", 443, "/usr/bin/curl", "", "GET", "/v1/models", ""},
		{"API.EXAMPLE.COM", 443, "/usr/bin/python3.11", "/usr/bin/bash", "HEAD", "/v1/a/b", ""},
		{"x.example.com", 8443, "/usr/bin/curl", "", "POST", "/v1/items/7", "foo-a&foo-b"},
		{"x.example.com", 8443, "/usr/bin/curl", "", "POST", "/v1/items/7", "foo-a&evil"},
		{"x.example.com", 443, "/usr/bin/curl", "", "PUT", "/v2/x", "abc&xb"},
		{"x.y.example.com", 443, "/usr/bin/curl", "", "GET", "/", ""},
		{"example.com", 443, "/usr/bin/curl", "", "GET", "/", ""},
		{"a.b.cdn.net", 80, "/usr/bin/wget", "", "GET", "/", ""},
		{"cdn.net", 443, "/usr/bin/wget", "", "GET", "/", ""},
		{"anything.at.all", 8080, "/opt/x/y/bin/tool", "", "GET", "/", ""},
		{"db.internal", 8080, "/usr/local/bin/app", "/usr/bin/bash", "GET", "/", ""},
		{"svc-db", 8080, "/opt/bin/tool", "", "GET", "/", ""},
		{"api.eu.example.io", 443, "/sandbox/agent.py", "", "DELETE", "/x", ""},
		{"mixed.case.org", 8443, "relative", "", "GET", "/", ""},
		{"", 0, "", "", "", "", ""},
		{"a.example.com:443", 443, "/usr/bin/curl", "", "GET", "/v1", ""},
		{"\xff.example.com", 443, "/usr/bin/\xff", "/\xff", "G\xffT", "/v1/\xff", "foo-\xff"},
	}
	for _, s := range seeds {
		f.Add(s.host, s.port, s.exe, s.anc, s.method, s.path, s.tag)
	}
	p := fuzzPolicy()
	e := mustNew(f, p)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, host string, port uint16, exe, anc, method, path, tag string) {
		in := policy.Input{
			Binary:       policy.Exe{Path: exe, Fingerprint: "fp"},
			CmdlinePaths: []string{"/sandbox/agent.py"},
			Host:         host,
			Port:         port,
		}
		if anc != "" {
			in.Ancestors = []policy.Exe{{Path: anc, Fingerprint: "fp"}}
		}
		want, _ := refDecide(p, in)
		for range 2 { // uncached, then cached
			got, err := e.Decide(ctx, in)
			if err != nil {
				t.Fatalf("Decide(%+v): %v", in, err)
			}
			if !sameDecision(got, want) {
				t.Fatalf("Decide(%+v)\n got: %s\nwant: %s", in, describe(got), describe(want))
			}
		}
		req := policy.Request{Input: in, Method: method, Path: path}
		if tag != "" {
			req.Query = map[string][]string{"tag": strings.Split(tag, "&")}
		}
		got, err := e.DecideRequest(ctx, req)
		if err != nil {
			t.Fatalf("DecideRequest(%+v): %v", req, err)
		}
		if want := refDecideRequest(p, req); !sameDecision(got, want) {
			t.Fatalf("DecideRequest(%+v)\n got: %s\nwant: %s", req, describe(got), describe(want))
		}
	})
}

func sameDecision(a, b policy.Decision) bool {
	return a.Action == b.Action && a.Policy == b.Policy && a.Endpoint == b.Endpoint &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs) && a.Reason == b.Reason && a.Engine == b.Engine
}

func TestRefGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		sep        rune
		want       bool
	}{
		{"*.a.com", "x.a.com", '.', true},
		{"*.a.com", "a.com", '.', false},
		{"*.a.com", "x.y.a.com", '.', false},
		{"**.a.com", "x.y.a.com", '.', true},
		{"/usr/bin/*", "/usr/bin/curl", '/', true},
		{"/usr/bin/*", "/usr/local/bin/foo", '/', false},
		{"/**", "/a/b/c", '/', true},
		{"foo-*", "foo-a/b.c", 0, true},
		{"a?c", "a.c", '.', false},
		{"a?c", "abc", '.', true},
	} {
		if got := refGlob(tc.pattern, tc.s, tc.sep); got != tc.want {
			t.Errorf("refGlob(%q, %q, %q) = %v", tc.pattern, tc.s, tc.sep, got)
		}
	}
}
