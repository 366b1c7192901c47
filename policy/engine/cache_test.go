package engine

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moatsandbox/moat/policy"
)

func TestCacheKeys(t *testing.T) {
	p := pol(map[string]*policy.NetworkPolicy{
		"k": np(eps(withIPs(ep("h.test", 443), "10.0.0.0/24")), curl),
	})
	e := mustNew(t, p)
	c := e.cur.Load()
	base := conn(curl, "h.test", 443, "/usr/bin/bash")

	steps := []struct {
		name    string
		mutate  func(*policy.Input)
		entries int // cache entries afterwards
	}{
		{"first decision", func(*policy.Input) {}, 1},
		{"same identity", func(*policy.Input) {}, 1},
		{"host case", func(in *policy.Input) { in.Host = "H.Test" }, 1},
		{"cmdline is not part of the key", func(in *policy.Input) { in.CmdlinePaths = []string{"/x"} }, 1},
		{"binary fingerprint", func(in *policy.Input) { in.Binary.Fingerprint = "changed" }, 2},
		{"ancestor fingerprint", func(in *policy.Input) { in.Ancestors[0].Fingerprint = "changed" }, 3},
		{"ancestor path", func(in *policy.Input) { in.Ancestors[0].Path = "/bin/sh" }, 4},
		{"extra ancestor", func(in *policy.Input) {
			in.Ancestors = append(in.Ancestors, policy.Exe{Path: "/sbin/init"})
		}, 5},
		{"port", func(in *policy.Input) { in.Port = 80 }, 6},
	}
	for _, s := range steps {
		in := base
		in.Ancestors = append([]policy.Exe(nil), base.Ancestors...)
		s.mutate(&in)
		decide(t, e, in)
		if n := c.cache.len(); n != s.entries {
			t.Errorf("%s: %d cache entries, want %d", s.name, n, s.entries)
		}
	}

	// Callers get their own AllowedIPs.
	d := decide(t, e, base)
	d.AllowedIPs[0] = "0.0.0.0/0"
	if d := decide(t, e, base); d.AllowedIPs[0] != "10.0.0.0/24" {
		t.Errorf("cached allowed_ips modified through a decision: %v", d.AllowedIPs)
	}
}

// TestCachedReasonUsesCurrentCmdline: a cached binary denial is worded
// with the command line of the call, not of the call that filled the cache.
func TestCachedReasonUsesCurrentCmdline(t *testing.T) {
	e := mustNew(t, pol(map[string]*policy.NetworkPolicy{"k": np(eps(ep("h.test", 443)), curl)}))
	in := conn("/usr/bin/python3", "h.test", 443)
	in.CmdlinePaths = []string{"/sandbox/one.py"}
	if d := decide(t, e, in); !strings.Contains(d.Reason, "cmdline: [/sandbox/one.py]") {
		t.Fatalf("first reason: %s", d.Reason)
	}
	in.CmdlinePaths = []string{"/sandbox/two.py", "/tmp/x"}
	d := decide(t, e, in)
	if want := policy.BinaryReason(in, "k"); d.Reason != want {
		t.Errorf("cached reason %q, want %q", d.Reason, want)
	}
	if n := e.cur.Load().cache.len(); n != 1 {
		t.Errorf("%d cache entries, want 1", n)
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(2)
	v := &verdict{}
	for _, k := range []string{"a", "b", "c"} {
		c.put([]byte(k), v)
	}
	if n := c.len(); n != 1 {
		t.Errorf("%d entries after overflowing a cache of 2, want 1 (cleared, then c)", n)
	}
	if c.get([]byte("c")) != v || c.get([]byte("a")) != nil {
		t.Error("cache content after clearing")
	}
}

func TestCacheKeyInjective(t *testing.T) {
	in := func(host, exe, fp string, anc ...string) []byte {
		i := policy.Input{Host: host, Port: 443, Binary: policy.Exe{Path: exe, Fingerprint: fp}}
		for _, a := range anc {
			i.Ancestors = append(i.Ancestors, policy.Exe{Path: a})
		}
		return appendKey(nil, host, &i)
	}
	keys := [][]byte{
		in("ab", "c", ""),
		in("a", "bc", ""),
		in("a", "b", "c"),
		in("a", "b", "", "c"),
		in("a", "b", "", "", "c"),
		in("a", "b", "", "c", ""),
	}
	for i := range keys {
		for j := range i {
			if string(keys[i]) == string(keys[j]) {
				t.Errorf("keys %d and %d collide: %q", i, j, keys[i])
			}
		}
	}
}

// countingGlobs wraps the precompiled globs and counts OPA's lookups.
type countingGlobs struct {
	globs
	hits, misses int
}

func (c *countingGlobs) Get(k ast.Value) (any, bool) {
	v, ok := c.globs.Get(k)
	if ok {
		c.hits++
	} else {
		c.misses++
	}
	return v, ok
}

func TestDecideCachedAllocs(t *testing.T) {
	e := mustNew(t, pol(map[string]*policy.NetworkPolicy{"k": np(eps(ep("h.test", 443)), curl)}))
	in := conn(curl, "h.test", 443, "/usr/bin/bash")
	decide(t, e, in)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := e.Decide(ctx, in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("cached allow allocates %.0f times, want 0", allocs)
	}
}

// TestDecideUncachedAllocs bounds the allocations of a decision that
// misses the cache (each call has a new fingerprint) and asks OPA: an
// exact host, allowed. Most of them are OPA's own per evaluation; the
// bound catches the input or the result extraction growing back.
func TestDecideUncachedAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts vary under the race detector")
	}
	e := mustNew(t, pol(map[string]*policy.NetworkPolicy{"k": np(eps(ep("h.test", 443)), curl)}))
	in := conn(curl, "h.test", 443, "/usr/bin/bash")
	decide(t, e, in)
	ctx := context.Background()
	fps := make([]string, 200)
	for i := range fps {
		fps[i] = "fp-" + strconv.Itoa(i)
	}
	n := 0
	allocs := testing.AllocsPerRun(100, func() {
		in.Binary.Fingerprint = fps[n]
		n++
		if d, err := e.Decide(ctx, in); err != nil || d.Action != policy.Allow {
			t.Fatalf("Decide: %s, %v", describe(d), err)
		}
	})
	const max = 64 // 93 before inputs were pooled and entries carried binaries; 56 after
	if allocs > max {
		t.Errorf("uncached allow allocates %.0f times, want at most %d", allocs, max)
	}
}
