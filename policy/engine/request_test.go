package engine

import (
	"context"
	"net/url"
	"testing"

	"github.com/moatsandbox/moat/policy"
)

func rule(method, path string) policy.Rule { return policy.Rule{Method: method, Path: path} }

func l7(host, enforcement string, rules ...policy.Rule) *policy.Endpoint {
	return &policy.Endpoint{Host: host, Ports: []uint16{443}, Protocol: policy.ProtocolREST, Enforcement: enforcement, Rules: rules}
}

var (
	readOnly  = []policy.Rule{rule("GET", "**"), rule("HEAD", "**"), rule("OPTIONS", "**")}
	readWrite = append(append([]policy.Rule{}, readOnly...), rule("POST", "**"), rule("PUT", "**"), rule("PATCH", "**"))
)

func TestDecideRequest(t *testing.T) {
	tagRule := policy.Rule{Method: "GET", Path: "/items", Query: map[string]policy.QueryMatcher{"tag": {Glob: "foo-*"}}}
	anyRule := policy.Rule{Method: "GET", Path: "/any", Query: map[string]policy.QueryMatcher{"tag": {Any: []string{"foo-*", "bar-*"}}}}
	twoKeys := policy.Rule{Method: "GET", Path: "/two", Query: map[string]policy.QueryMatcher{"a": {Glob: "1"}, "b": {Glob: "2*"}}}
	p := pol(map[string]*policy.NetworkPolicy{
		"ro":    np(eps(l7("ro.test", policy.Enforce, readOnly...)), curl),
		"rw":    np(eps(l7("rw.test", policy.Enforce, readWrite...)), curl),
		"full":  np(eps(l7("full.test", policy.Enforce, rule("*", "**"))), curl),
		"audit": np(eps(l7("audit.test", "", readOnly...), l7("audit2.test", policy.AuditOnly, readOnly...)), curl),
		"rules": np(eps(l7("rules.test", policy.Enforce,
			rule("GET", "/v1/**"), rule("post", "/v1/items/*"), tagRule, anyRule, twoKeys, rule("GET", "/free"),
			policy.Rule{Command: "SELECT"}, // SQL rules never allow HTTP
		)), curl),
		// Two policies share a host: each one's rules count.
		"share-a": np(eps(l7("shared.test", policy.Enforce, rule("GET", "**"))), curl),
		"share-b": np(eps(l7("shared.test", policy.Enforce, rule("POST", "/upload"))), curl),
		"plain":   np(eps(ep("plain.test", 443)), curl),
	})
	e := mustNew(t, p)

	tests := []struct {
		name   string
		host   string
		exe    string
		method string
		target string // path?query
		want   policy.Action
		policy string
		reason string
	}{
		// Scenario 19.
		{name: "read-only GET", host: "ro.test", method: "GET", target: "/v1/x", want: policy.Allow},
		{name: "read-only HEAD", host: "ro.test", method: "HEAD", target: "/v1/x", want: policy.Allow},
		{name: "read-only OPTIONS", host: "ro.test", method: "OPTIONS", target: "/", want: policy.Allow},
		{name: "read-only POST", host: "ro.test", method: "POST", target: "/v1/x", want: policy.Deny,
			reason: "POST /v1/x not permitted by policy"},
		{name: "read-write PATCH", host: "rw.test", method: "PATCH", target: "/v1/x", want: policy.Allow},
		{name: "read-write DELETE", host: "rw.test", method: "DELETE", target: "/v1/x", want: policy.Deny,
			reason: "DELETE /v1/x not permitted by policy"},
		{name: "full DELETE", host: "full.test", method: "DELETE", target: "/v1/x", want: policy.Allow},
		// Scenario 20.
		{name: "audit by default", host: "audit.test", method: "POST", target: "/v1/x", want: policy.Audit,
			reason: "POST /v1/x not permitted by policy"},
		{name: "explicit audit", host: "audit2.test", method: "DELETE", target: "/x", want: policy.Audit, policy: "audit",
			reason: "DELETE /x not permitted by policy"},
		{name: "audit allows what the rules allow", host: "audit.test", method: "GET", target: "/x", want: policy.Allow},
		// Scenario 21.
		{name: "/v1/** deep", host: "rules.test", method: "GET", target: "/v1/a/b", want: policy.Allow},
		{name: "/v1/** other prefix", host: "rules.test", method: "GET", target: "/v2/x", want: policy.Deny,
			reason: "GET /v2/x not permitted by policy"},
		{name: "/v1/** wrong method", host: "rules.test", method: "POST", target: "/v1/a", want: policy.Deny,
			reason: "POST /v1/a not permitted by policy"},
		{name: "GET rule allows HEAD", host: "rules.test", method: "HEAD", target: "/v1/a", want: policy.Allow},
		{name: "method case-insensitive", host: "rules.test", method: "get", target: "/v1/a", want: policy.Allow},
		{name: "rule method case-insensitive", host: "rules.test", method: "POST", target: "/v1/items/7", want: policy.Allow},
		{name: "* is one segment", host: "rules.test", method: "POST", target: "/v1/items/7/x", want: policy.Deny,
			reason: "POST /v1/items/7/x not permitted by policy"},
		{name: "query all values match", host: "rules.test", method: "GET", target: "/items?tag=foo-a&tag=foo-b", want: policy.Allow},
		{name: "query one value does not", host: "rules.test", method: "GET", target: "/items?tag=foo-a&tag=evil", want: policy.Deny,
			reason: "GET /items not permitted by policy"},
		{name: "query key missing", host: "rules.test", method: "GET", target: "/items?slug=1", want: policy.Deny,
			reason: "GET /items not permitted by policy"},
		{name: "query absent", host: "rules.test", method: "GET", target: "/items", want: policy.Deny,
			reason: "GET /items not permitted by policy"},
		{name: "query other keys ignored", host: "rules.test", method: "GET", target: "/items?tag=foo-a&other=x", want: policy.Allow},
		{name: "query glob has no separator", host: "rules.test", method: "GET", target: "/items?tag=foo-a.b%2Fc", want: policy.Allow},
		{name: "query any", host: "rules.test", method: "GET", target: "/any?tag=foo-a&tag=bar-b", want: policy.Allow},
		{name: "query any miss", host: "rules.test", method: "GET", target: "/any?tag=foo-a&tag=baz", want: policy.Deny,
			reason: "GET /any not permitted by policy"},
		{name: "query every key", host: "rules.test", method: "GET", target: "/two?a=1&b=22", want: policy.Allow},
		{name: "query every key missing one", host: "rules.test", method: "GET", target: "/two?a=1", want: policy.Deny,
			reason: "GET /two not permitted by policy"},
		{name: "rule without query allows any query", host: "rules.test", method: "GET", target: "/free?x=1&y=2", want: policy.Allow},
		{name: "sql rule allows no request", host: "rules.test", method: "SELECT", target: "/free", want: policy.Deny,
			reason: "SELECT /free not permitted by policy"},
		// Rules of every policy that matches count.
		{name: "rules of two policies", host: "shared.test", method: "POST", target: "/upload", want: policy.Allow, policy: "share-a"},
		// No L7 endpoint: requests are not inspected and get the
		// connection's decision.
		{name: "no rules", host: "plain.test", method: "GET", target: "/", want: policy.Allow},
		// The connection decision comes first.
		{name: "connection denied", host: "ro.test", exe: "/usr/bin/wget", method: "GET", target: "/", want: policy.Deny,
			reason: "binary '/usr/bin/wget' not allowed in policy 'ro' (ancestors: [], cmdline: [])"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			exe := curl
			if tt.exe != "" {
				exe = tt.exe
			}
			req := policy.Request{Input: conn(exe, tt.host, 443), Method: tt.method, Path: u.Path, Query: u.Query()}
			d, err := e.DecideRequest(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			wantPolicy := tt.policy
			if wantPolicy == "" && !(tt.want == policy.Deny && tt.exe != "") {
				for k, n := range p.Network {
					if n.Endpoints[0].Host == tt.host {
						wantPolicy = k
					}
				}
			}
			if d.Action != tt.want || d.Reason != tt.reason || d.Policy != wantPolicy || d.Engine != "opa" {
				t.Errorf("got %s; want %s policy=%s reason=%s", describe(d), tt.want, wantPolicy, tt.reason)
			}
			if (d.Action == policy.Deny) != (d.Endpoint == nil) {
				t.Errorf("endpoint %v on %s", d.Endpoint, d.Action)
			}
		})
	}
}
