package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/moatsandbox/moat/policy"
)

// --- helpers ---

func ep(host string, ports ...uint16) *policy.Endpoint {
	return &policy.Endpoint{Host: host, Ports: ports}
}

func withIPs(e *policy.Endpoint, cidrs ...string) *policy.Endpoint {
	for _, c := range cidrs {
		e.AllowedIPs = append(e.AllowedIPs, netip.MustParsePrefix(c))
	}
	return e
}

func np(eps []*policy.Endpoint, binaries ...string) *policy.NetworkPolicy {
	n := &policy.NetworkPolicy{Endpoints: eps}
	for _, b := range binaries {
		n.Binaries = append(n.Binaries, policy.Binary{Path: b})
	}
	return n
}

func eps(e ...*policy.Endpoint) []*policy.Endpoint { return e }

// pol builds a policy from network policies, filling in their keys.
func pol(network map[string]*policy.NetworkPolicy) *policy.Policy {
	for k, n := range network {
		if n != nil {
			n.Key, n.Name = k, k
		}
	}
	return &policy.Policy{Version: policy.Version, Network: network, Source: "test"}
}

func conn(exe, host string, port uint16, ancestors ...string) policy.Input {
	in := policy.Input{Binary: policy.Exe{Path: exe, Fingerprint: "fp:" + exe}, Host: host, Port: port}
	for _, a := range ancestors {
		in.Ancestors = append(in.Ancestors, policy.Exe{Path: a, Fingerprint: "fp:" + a})
	}
	return in
}

func mustNew(t testing.TB, p *policy.Policy) *Engine {
	t.Helper()
	e, err := New(p)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func decide(t testing.TB, e *Engine, in policy.Input) policy.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatalf("Decide(%+v): %v", in, err)
	}
	return d
}

// endpointAt returns the endpoint i of policy key, or nil for key "".
func endpointAt(p *policy.Policy, key string, i int) *policy.Endpoint {
	if key == "" {
		return nil
	}
	return p.Network[key].Endpoints[i]
}

// --- connection decisions ---

const curl = "/usr/bin/curl"

func TestDecide(t *testing.T) {
	base := pol(map[string]*policy.NetworkPolicy{
		"k": np(eps(ep("api.example.test", 443)), curl),
	})
	multiPort := pol(map[string]*policy.NetworkPolicy{
		"k": np(eps(ep("api.example.test", 443, 80)), curl),
	})
	globs := pol(map[string]*policy.NetworkPolicy{
		"any":   np(eps(ep("*.example.com", 443), ep("**.example.org", 443)), "/**"),
		"usr":   np(eps(ep("u.test", 443)), "/usr/bin/*"),
		"py":    np(eps(ep("py.test", 443)), "/usr/bin/python3.1?"),
		"brace": np(eps(ep("{a,b}.example.net", 443), ep("api.*.example.io", 443), ep("svc-*", 8080)), curl),
	})
	ancestry := pol(map[string]*policy.NetworkPolicy{
		"shell": np(eps(ep("host.test", 443)), "/usr/bin/bash"),
		"agent": np(eps(ep("agent.test", 443)), "/sandbox/agent.py"),
		"glob":  np(eps(ep("glob.test", 443)), "/usr/bin/ba*"),
	})
	overlap := pol(map[string]*policy.NetworkPolicy{
		"b-ips":   np(eps(withIPs(ep("h.test", 443), "10.0.0.0/24")), curl),
		"a-plain": np(eps(ep("h.test", 443)), curl),
		"c-other": np(eps(withIPs(ep("h.test", 443), "10.9.0.0/24")), "/usr/bin/wget"),
		"d-both":  np(eps(withIPs(ep("h.test", 443), "10.0.0.0/24", "10.1.0.0/24")), curl),
	})
	hostless := pol(map[string]*policy.NetworkPolicy{
		"lan": np(eps(withIPs(&policy.Endpoint{Ports: []uint16{19876}}, "10.200.0.0/24")), curl),
	})
	selection := pol(map[string]*policy.NetworkPolicy{
		"a": np(eps(ep("h.test", 443), ep("{h,x}.test", 443), &policy.Endpoint{Host: "h.test", Ports: []uint16{443}, TLS: policy.TLSSkip}), curl),
		"b": np(eps(ep("plain.test", 443), ep("PLAIN.test", 443, 80)), curl),
	})
	two := pol(map[string]*policy.NetworkPolicy{
		"a": np(eps(ep("a.test", 443)), curl),
		"b": np(eps(ep("b.test", 443)), curl),
	})
	four := pol(map[string]*policy.NetworkPolicy{
		"a": np(eps(ep("a.test", 443)), curl),
		"b": np(eps(ep("b.test", 443)), curl),
		"c": np(eps(ep("c.test", 443)), curl),
		"d": np(eps(ep("d.test", 443)), curl),
	})
	binaryDeny := pol(map[string]*policy.NetworkPolicy{
		"a": np(eps(ep("h.test", 443)), curl),
		"b": np(eps(ep("h.test", 443)), "/usr/bin/wget"),
		"c": np(eps(ep("other.test", 443)), "/usr/bin/python3"),
	})
	invalid := pol(map[string]*policy.NetworkPolicy{
		"bad":  np(eps(ep("*.[bad.test", 443), ep("noports.test")), "/usr/bin/["),
		"good": np(eps(ep("good.test", 443)), curl),
	})
	emptyHost := pol(map[string]*policy.NetworkPolicy{
		"k": np(eps(ep("", 443)), curl), // no allowed_ips: matches only an empty host, as in OpenShell
	})

	python := conn("/usr/bin/python3.11", "api.example.test", 443, "/usr/bin/bash")
	python.CmdlinePaths = []string{"/sandbox/fetch.py"}
	agent := conn("/usr/bin/python3", "agent.test", 443, "/usr/bin/bash")
	agent.CmdlinePaths = []string{"/sandbox/agent.py"}
	wget := conn("/usr/bin/wget", "h.test", 443)
	python3 := conn("/usr/bin/python3", "h.test", 443)

	tests := []struct {
		name   string
		p      *policy.Policy
		in     policy.Input
		allow  bool
		policy string // matched key
		epKey  string // expected governing endpoint: policy key and index
		epIdx  int
		ips    []string
		reason string
	}{
		// Scenario 4 and case-insensitivity.
		{name: "allow", p: base, in: conn(curl, "api.example.test", 443), allow: true, policy: "k", epKey: "k"},
		{name: "host case-insensitive", p: base, in: conn(curl, "API.Example.TEST", 443), allow: true, policy: "k", epKey: "k"},
		// Scenario 5.
		{name: "wrong host", p: base, in: conn(curl, "example.com", 443),
			reason: "endpoint example.com:443 not in policy 'k'"},
		{name: "reason host lowercased", p: base, in: conn(curl, "EXAMPLE.com", 443),
			reason: "endpoint example.com:443 not in policy 'k'"},
		// Scenario 6.
		{name: "binary binding", p: base, in: python,
			reason: "binary '/usr/bin/python3.11' not allowed in policy 'k' (ancestors: [/usr/bin/bash], cmdline: [/sandbox/fetch.py])"},
		// Scenario 7.
		{name: "wrong port", p: base, in: conn(curl, "api.example.test", 80),
			reason: "endpoint api.example.test:80 not in policy 'k'"},
		{name: "second port", p: multiPort, in: conn(curl, "api.example.test", 80), allow: true, policy: "k", epKey: "k"},
		{name: "port not listed", p: multiPort, in: conn(curl, "api.example.test", 8080),
			reason: "endpoint api.example.test:8080 not in policy 'k'"},
		// Scenario 8.
		{name: "binary /** allows anything", p: globs, in: conn("/opt/x/y/z", "a.example.com", 443), allow: true, policy: "any", epKey: "any"},
		{name: "host glob any case", p: globs, in: conn(curl, "A.EXAMPLE.com", 443), allow: true, policy: "any", epKey: "any"},
		{name: "*. does not match the bare domain", p: globs, in: conn(curl, "example.com", 443),
			reason: "endpoint example.com:443 not in any of 4 policies"},
		{name: "*. matches one label only", p: globs, in: conn(curl, "x.y.example.com", 443),
			reason: "endpoint x.y.example.com:443 not in any of 4 policies"},
		{name: "**. matches several labels", p: globs, in: conn(curl, "x.y.example.org", 443), allow: true, policy: "any", epKey: "any", epIdx: 1},
		{name: "**. does not match the bare domain", p: globs, in: conn(curl, "example.org", 443),
			reason: "endpoint example.org:443 not in any of 4 policies"},
		{name: "host glob port", p: globs, in: conn(curl, "a.example.com", 80),
			reason: "endpoint a.example.com:80 not in any of 4 policies"},
		{name: "binary glob one segment", p: globs, in: conn(curl, "u.test", 443), allow: true, policy: "usr", epKey: "usr"},
		{name: "binary glob not deeper", p: globs, in: conn("/usr/local/bin/foo", "u.test", 443),
			reason: "binary '/usr/local/bin/foo' not allowed in policy 'usr' (ancestors: [], cmdline: [])"},
		{name: "binary glob ?", p: globs, in: conn("/usr/bin/python3.11", "py.test", 443), allow: true, policy: "py", epKey: "py"},
		{name: "binary glob ? is one character", p: globs, in: conn("/usr/bin/python3.111", "py.test", 443),
			reason: "binary '/usr/bin/python3.111' not allowed in policy 'py' (ancestors: [], cmdline: [])"},
		{name: "host glob braces", p: globs, in: conn(curl, "b.example.net", 443), allow: true, policy: "brace", epKey: "brace"},
		{name: "host glob in the middle", p: globs, in: conn(curl, "api.eu.example.io", 443), allow: true, policy: "brace", epKey: "brace", epIdx: 1},
		{name: "host glob without literal labels", p: globs, in: conn(curl, "svc-db", 8080), allow: true, policy: "brace", epKey: "brace", epIdx: 2},
		{name: "host glob star stops at dots", p: globs, in: conn(curl, "svc-db.x", 8080),
			reason: "endpoint svc-db.x:8080 not in any of 4 policies"},
		// Scenario 9.
		{name: "ancestor grants", p: ancestry, in: conn(curl, "host.test", 443, "/usr/bin/bash", "/usr/bin/tini"), allow: true, policy: "shell", epKey: "shell"},
		{name: "ancestor glob grants", p: ancestry, in: conn(curl, "glob.test", 443, "/usr/bin/bash"), allow: true, policy: "glob", epKey: "glob"},
		{name: "cmdline never grants", p: ancestry, in: agent,
			reason: "binary '/usr/bin/python3' not allowed in policy 'agent' (ancestors: [/usr/bin/bash], cmdline: [/sandbox/agent.py])"},
		// Scenario 10.
		{name: "no policies", p: pol(nil), in: conn(curl, "api.example.test", 443), reason: policy.ReasonNoPolicies},
		{name: "empty policies", p: pol(map[string]*policy.NetworkPolicy{}), in: conn(curl, "x", 1), reason: policy.ReasonNoPolicies},
		// Scenario 11.
		{name: "overlap: smallest key, allowed_ips union", p: overlap, in: conn(curl, "h.test", 443),
			allow: true, policy: "a-plain", epKey: "b-ips", ips: []string{"10.0.0.0/24", "10.1.0.0/24"}},
		// Hostless allowed_ips endpoint.
		{name: "hostless any host", p: hostless, in: conn(curl, "anything.example", 19876),
			allow: true, policy: "lan", epKey: "lan", ips: []string{"10.200.0.0/24"}},
		{name: "hostless port", p: hostless, in: conn(curl, "anything.example", 80),
			reason: "endpoint anything.example:80 not in policy 'lan'"},
		// Governing endpoint.
		{name: "endpoint with tls governs", p: selection, in: conn(curl, "h.test", 443), allow: true, policy: "a", epKey: "a", epIdx: 2},
		{name: "else the first", p: selection, in: conn(curl, "plain.test", 443), allow: true, policy: "b", epKey: "b"},
		// Reasons.
		{name: "endpoint reason per policy", p: two, in: conn(curl, "c.test", 443),
			reason: "endpoint c.test:443 not in policy 'a'; endpoint c.test:443 not in policy 'b'"},
		{name: "endpoint reason over three policies", p: four, in: conn(curl, "e.test", 443),
			reason: "endpoint e.test:443 not in any of 4 policies"},
		// Policy c allows python3 but does not list h.test: it is not named.
		{name: "binary reason per listing policy", p: binaryDeny, in: python3,
			reason: "binary '/usr/bin/python3' not allowed in policy 'a' (ancestors: [], cmdline: []); " +
				"binary '/usr/bin/python3' not allowed in policy 'b' (ancestors: [], cmdline: [])"},
		{name: "second listing policy allows", p: binaryDeny, in: wget, allow: true, policy: "b", epKey: "b"},
		// Malformed data.
		{name: "invalid host glob matches nothing", p: invalid, in: conn("/usr/bin/[", "x.[bad.test", 443),
			reason: "endpoint x.[bad.test:443 not in policy 'bad'; endpoint x.[bad.test:443 not in policy 'good'"},
		{name: "endpoint without ports matches nothing", p: invalid, in: conn(curl, "noports.test", 443),
			reason: "endpoint noports.test:443 not in policy 'bad'; endpoint noports.test:443 not in policy 'good'"},
		{name: "empty host", p: base, in: conn(curl, "", 443), reason: "endpoint :443 not in policy 'k'"},
		{name: "empty endpoint host matches only an empty host", p: emptyHost, in: conn(curl, "", 443), allow: true, policy: "k", epKey: "k"},
		{name: "port zero", p: base, in: conn(curl, "api.example.test", 0), reason: "endpoint api.example.test:0 not in policy 'k'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustNew(t, tt.p)
			d := decide(t, e, tt.in)
			want := policy.Decision{Action: policy.Deny, Engine: "opa", Reason: tt.reason}
			if tt.allow {
				want = policy.Decision{
					Action:     policy.Allow,
					Policy:     tt.policy,
					Endpoint:   endpointAt(tt.p, tt.epKey, tt.epIdx),
					AllowedIPs: tt.ips,
					Engine:     "opa",
				}
			}
			assertDecision(t, d, want)
			// The cached verdict renders the same decision.
			assertDecision(t, decide(t, e, tt.in), want)
		})
	}
}

func assertDecision(t *testing.T, got, want policy.Decision) {
	t.Helper()
	if got.Action != want.Action || got.Policy != want.Policy || got.Endpoint != want.Endpoint ||
		!slices.Equal(got.AllowedIPs, want.AllowedIPs) || got.Reason != want.Reason || got.Engine != want.Engine {
		t.Errorf("decision\n got: %s\nwant: %s", describe(got), describe(want))
	}
}

func describe(d policy.Decision) string {
	var b strings.Builder
	b.WriteString(string(d.Action) + " policy=" + d.Policy + " engine=" + d.Engine)
	if d.Endpoint != nil {
		b.WriteString(" endpoint=" + d.Endpoint.Host)
	}
	b.WriteString(" ips=[" + strings.Join(d.AllowedIPs, ",") + "] reason=" + d.Reason)
	return b.String()
}

// TestGlobsPrecompiled checks that every glob reaches OPA precompiled: the
// ids the index registers are the ones glob.match looks up.
func TestGlobsPrecompiled(t *testing.T) {
	p := pol(map[string]*policy.NetworkPolicy{
		"k": np(eps(ep("*.example.com", 443), &policy.Endpoint{
			Host: "api.test", Ports: []uint16{443}, Protocol: policy.ProtocolREST,
			Rules: []policy.Rule{{Method: "GET", Path: "/v1/*", Query: map[string]policy.QueryMatcher{"q": {Glob: "a*"}}}},
		}), "/usr/bin/*"),
	})
	e := mustNew(t, p)
	c := e.cur.Load()
	counting := &countingGlobs{globs: c.idx.globs}
	c.conn.WithInterQueryBuiltinValueCache(counting)
	c.request.WithInterQueryBuiltinValueCache(counting)
	if d := decide(t, e, conn(curl, "a.example.com", 443)); d.Action != policy.Allow {
		t.Fatalf("glob decision: %s", describe(d))
	}
	req := policy.Request{Input: conn(curl, "api.test", 443), Method: "GET", Path: "/v1/x", Query: map[string][]string{"q": {"ab"}}}
	if d, err := e.DecideRequest(context.Background(), req); err != nil || d.Action != policy.Allow {
		t.Fatalf("request: %s, %v", describe(d), err)
	}
	if counting.hits < 4 || counting.misses != 0 {
		t.Errorf("glob cache: %d hits, %d misses; want every glob precompiled", counting.hits, counting.misses)
	}
}

// --- engine lifecycle ---

func TestNoPolicyLoaded(t *testing.T) {
	ctx := context.Background()
	nilEngine := mustNew(t, nil)
	for name, e := range map[string]*Engine{"New(nil)": nilEngine, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			if e.Revision() != 0 || e.Policy() != nil {
				t.Errorf("revision %d, policy %v; want 0, nil", e.Revision(), e.Policy())
			}
			d, err := e.Decide(ctx, conn(curl, "h", 443))
			if !errors.Is(err, ErrNoPolicy) || d.Action != policy.Deny || d.Allowed() {
				t.Errorf("Decide: %s, %v; want a deny and ErrNoPolicy", describe(d), err)
			}
			d, err = e.DecideRequest(ctx, policy.Request{Input: conn(curl, "h", 443), Method: "GET", Path: "/"})
			if !errors.Is(err, ErrNoPolicy) || d.Action != policy.Deny {
				t.Errorf("DecideRequest: %s, %v; want a deny and ErrNoPolicy", describe(d), err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	ctx := context.Background()
	pa := pol(map[string]*policy.NetworkPolicy{"pa": np(eps(ep("a.test", 443)), curl)})
	pb := pol(map[string]*policy.NetworkPolicy{"pb": np(eps(ep("b.test", 443)), curl)})
	e := mustNew(t, pa)
	if e.Revision() != 1 || e.Policy() != pa {
		t.Fatalf("after New: revision %d", e.Revision())
	}
	decide(t, e, conn(curl, "a.test", 443))
	if n := e.cur.Load().cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}

	// Failed loads keep the last good policy and revision.
	bad := []*policy.Policy{
		nil,
		pol(map[string]*policy.NetworkPolicy{"x": nil}),
		pol(map[string]*policy.NetworkPolicy{"x": np(eps(ep("x", 1), nil), curl)}),
	}
	for _, p := range bad {
		if err := e.Load(ctx, p); err == nil {
			t.Errorf("Load(%v) succeeded", p)
		}
	}
	if err := e.Load(ctx, pol(map[string]*policy.NetworkPolicy{"x": nil})); err == nil ||
		!strings.Contains(err.Error(), `network policy "x" is nil`) {
		t.Errorf("error %v; want it to name the policy", err)
	}
	if e.Revision() != 1 || e.Policy() != pa {
		t.Fatalf("failed load changed the engine: revision %d", e.Revision())
	}
	if d := decide(t, e, conn(curl, "a.test", 443)); d.Action != policy.Allow {
		t.Fatalf("old policy lost: %s", describe(d))
	}

	// A good load swaps the policy, bumps the revision and empties the cache.
	if err := e.Load(ctx, pb); err != nil {
		t.Fatal(err)
	}
	if e.Revision() != 2 || e.Policy() != pb {
		t.Fatalf("revision %d after load, want 2", e.Revision())
	}
	if n := e.cur.Load().cache.len(); n != 0 {
		t.Fatalf("new revision starts with %d cached entries", n)
	}
	if d := decide(t, e, conn(curl, "a.test", 443)); d.Action != policy.Deny || d.Reason != "endpoint a.test:443 not in policy 'pb'" {
		t.Errorf("a.test after swap: %s", describe(d))
	}
	if d := decide(t, e, conn(curl, "b.test", 443)); d.Action != policy.Allow {
		t.Errorf("b.test after swap: %s", describe(d))
	}
}

// TestConcurrentLoad decides from several goroutines while policies are
// swapped; run with -race.
func TestConcurrentLoad(t *testing.T) {
	ctx := context.Background()
	pa := pol(map[string]*policy.NetworkPolicy{"pa": np(eps(ep("a.test", 443)), curl)})
	pb := pol(map[string]*policy.NetworkPolicy{"pb": np(eps(&policy.Endpoint{
		Host: "a.test", Ports: []uint16{8443}, Protocol: policy.ProtocolREST, Enforcement: policy.Enforce,
		Rules: []policy.Rule{{Method: "GET", Path: "**"}},
	}), curl)})
	e := mustNew(t, pa)
	done := make(chan struct{})
	errs := make(chan error, 8)
	for g := range 4 {
		go func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				in := conn(curl, "a.test", 443)
				in.Binary.Fingerprint = string(rune('a' + g%26))
				if i%3 == 0 {
					in.Port = 8443
				}
				d, err := e.Decide(ctx, in)
				if err != nil {
					errs <- err
					return
				}
				okA := d.Action == policy.Allow && d.Policy == "pa" || d.Reason == "endpoint a.test:8443 not in policy 'pa'"
				okB := d.Action == policy.Allow && d.Policy == "pb" || d.Reason == "endpoint a.test:443 not in policy 'pb'"
				if !okA && !okB {
					errs <- errors.New("inconsistent decision: " + describe(d))
					return
				}
				if _, err := e.DecideRequest(ctx, policy.Request{Input: in, Method: "GET", Path: "/x"}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 40 {
		p := pa
		if i%2 == 0 {
			p = pb
		}
		if err := e.Load(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if e.Revision() != 41 {
		t.Errorf("revision %d, want 41", e.Revision())
	}
}

// TestConcurrentUncachedDecide runs uncached decisions from several
// goroutines, with ancestor chains of every length up to past the pooled
// inputs' (maxPooledPaths), and checks each against the reference
// evaluator: pooled inputs must not leak between decisions. Most
// destinations take the exact lookup alone or host globs alone (the pooled
// inputs); the policies allow an executable, a shell or the ancestor at one
// depth.
func TestConcurrentUncachedDecide(t *testing.T) {
	p := pol(map[string]*policy.NetworkPolicy{
		"a":    np(eps(ep("a.test", 443), ep("shared.test", 443)), curl),
		"b":    np(eps(ep("b.test", 443), ep("shared.test", 443, 80)), "/usr/bin/bash"),
		"deep": np(eps(ep("deep.test", 443)), "/usr/bin/anc-3", "/usr/bin/anc-9"),
		"glob": np(eps(ep("*.glob.test", 443)), "/usr/bin/anc-1"),
	})
	e := mustNew(t, p)
	ctx := context.Background()
	hosts := []string{"a.test", "b.test", "shared.test", "deep.test", "x.glob.test", "a.b.glob.test", "nowhere.test"}
	exes := []string{curl, "/usr/bin/wget", "/usr/bin/bash"}
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range 500 {
				in := policy.Input{
					Binary: policy.Exe{Path: exes[(i+g)%len(exes)], Fingerprint: fmt.Sprintf("fp-%d-%d", g, i)},
					Host:   hosts[(i*5+g)%len(hosts)],
					Port:   443,
				}
				if i%11 == 0 {
					in.Port = 80
				}
				for a := range (i + g) % (maxPooledPaths + 3) {
					in.Ancestors = append(in.Ancestors, policy.Exe{Path: fmt.Sprintf("/usr/bin/anc-%d", a), Fingerprint: "fp"})
				}
				if i%7 == 0 && len(in.Ancestors) > 0 {
					in.Ancestors[len(in.Ancestors)-1].Path = "/usr/bin/bash"
				}
				want, _ := refDecide(p, in)
				got, err := e.Decide(ctx, in)
				if err != nil {
					errs <- err
					return
				}
				if !sameDecision(got, want) {
					errs <- fmt.Errorf("Decide(%+v)\n got: %s\nwant: %s", in, describe(got), describe(want))
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	e := mustNew(t, pol(map[string]*policy.NetworkPolicy{"k": np(eps(ep("h.test", 443)), curl)}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := e.Decide(ctx, conn(curl, "h.test", 443))
	if !errors.Is(err, context.Canceled) || d.Action != policy.Deny {
		t.Errorf("Decide: %s, %v; want a deny and context.Canceled", describe(d), err)
	}
}

// TestParsedPolicy runs decisions on a policy from the parser, with its
// access presets expanded and ports normalised.
func TestParsedPolicy(t *testing.T) {
	doc := `
version: 1
network_policies:
  github:
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest
        enforcement: enforce
        access: read-only
      - host: "*.githubusercontent.com"
        ports: [443, 80]
    binaries:
      - path: /usr/bin/curl
      - path: /usr/bin/git*
  internal:
    endpoints:
      - ports: [19876]
        allowed_ips: ["10.200.0.0/24"]
    binaries:
      - path: /usr/bin/python3*
`
	p, _, err := policy.Parse("policy.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	e := mustNew(t, p)
	ctx := context.Background()
	for _, tc := range []struct {
		in     policy.Input
		method string
		want   policy.Action
	}{
		{conn("/usr/bin/git-remote-https", "api.github.com", 443, "/usr/bin/git"), "GET", policy.Allow},
		{conn("/usr/bin/curl", "API.GitHub.com", 443), "HEAD", policy.Allow},
		{conn("/usr/bin/curl", "api.github.com", 443), "POST", policy.Deny},
		{conn("/usr/bin/curl", "raw.githubusercontent.com", 80), "", policy.Allow},
		{conn("/usr/bin/python3.12", "files.lan", 19876), "", policy.Allow},
		{conn("/usr/bin/python3.12", "api.github.com", 443), "", policy.Deny},
	} {
		var d policy.Decision
		if tc.method == "" {
			d, err = e.Decide(ctx, tc.in)
		} else {
			d, err = e.DecideRequest(ctx, policy.Request{Input: tc.in, Method: tc.method, Path: "/repos/x"})
		}
		if err != nil || d.Action != tc.want {
			t.Errorf("%s %s:%d %s: %s, %v; want %s", tc.in.Binary.Path, tc.in.Host, tc.in.Port, tc.method, describe(d), err, tc.want)
		}
	}
}
