package engine

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatsandbox/moat/policy"
)

// benchPolicy spreads n endpoints over min(n, 100) policies: mostly exact
// hosts on 443 (every third also on 80), every 20th a `*.` glob, every 50th
// an L7 endpoint; each policy has four exact binaries and every tenth a
// binary glob too. It returns the policy and a mix of inputs: allowed
// exact hosts, allowed glob hosts, wrong binaries and unknown hosts.
func benchPolicy(n int) (*policy.Policy, []policy.Input) {
	nPolicies := min(n, 100)
	p := &policy.Policy{Version: 1, Network: map[string]*policy.NetworkPolicy{}}
	key := func(k int) string { return fmt.Sprintf("policy-%03d", k) }
	for k := range nPolicies {
		np := &policy.NetworkPolicy{Key: key(k), Name: key(k)}
		for b := range 4 {
			np.Binaries = append(np.Binaries, policy.Binary{Path: fmt.Sprintf("/usr/bin/tool-%d-%d", k, b)})
		}
		if k%10 == 0 {
			np.Binaries = append(np.Binaries, policy.Binary{Path: fmt.Sprintf("/opt/p%d/*", k)})
		}
		p.Network[key(k)] = np
	}
	var inputs []policy.Input
	for j := range n {
		k := j % nPolicies
		np := p.Network[key(k)]
		ep := &policy.Endpoint{Host: fmt.Sprintf("host-%d.svc-%d.example.com", j, k), Ports: []uint16{443}}
		query := ep.Host
		if j%3 == 0 {
			ep.Ports = append(ep.Ports, 80)
		}
		if j%20 == 0 {
			ep.Host = fmt.Sprintf("*.zone-%d.example.net", j)
			query = fmt.Sprintf("api.zone-%d.example.net", j)
		}
		if j%50 == 0 {
			ep.Protocol, ep.Enforcement = policy.ProtocolREST, policy.Enforce
			ep.Rules = []policy.Rule{{Method: "GET", Path: "/v1/**"}}
			ep.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
		}
		np.Endpoints = append(np.Endpoints, ep)
		exe := policy.Exe{Path: fmt.Sprintf("/usr/bin/tool-%d-%d", k, j%4), Fingerprint: "sha256:0"}
		in := policy.Input{
			Binary:    exe,
			Ancestors: []policy.Exe{{Path: "/usr/bin/bash", Fingerprint: "sha256:1"}},
			Host:      query,
			Port:      443,
		}
		switch j % 10 {
		case 7: // wrong binary
			in.Binary.Path = "/usr/bin/intruder"
		case 8: // unknown host
			in.Host = fmt.Sprintf("nowhere-%d.example.org", j)
		}
		inputs = append(inputs, in)
	}
	return p, inputs
}

// fingerprints numbers the executable fingerprints of uncached runs.
var fingerprints atomic.Uint64

// BenchmarkDecide measures connection decisions with the cache warm
// (cached) and with every call missing it (uncached: each call has a new
// executable fingerprint), reporting the p50 and p99 latency.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		p, inputs := benchPolicy(n)
		e, err := New(p)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.Run(fmt.Sprintf("endpoints=%d/cached", n), func(b *testing.B) {
			for _, in := range inputs {
				if _, err := e.Decide(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
			runTimed(b, func(i int) error {
				_, err := e.Decide(ctx, inputs[i%len(inputs)])
				return err
			})
		})
		b.Run(fmt.Sprintf("endpoints=%d/uncached", n), func(b *testing.B) {
			// A fingerprint never seen before on every call, in this run
			// and in the earlier runs of the same engine (-count). (The
			// cache holds up to cacheSize of them and is cleared when
			// full, which these runs include.)
			fps := make([]string, b.N)
			for i := range fps {
				fps[i] = "sha256:" + strconv.FormatUint(fingerprints.Add(1), 10)
			}
			runTimed(b, func(i int) error {
				in := inputs[i%len(inputs)]
				in.Binary.Fingerprint = fps[i]
				_, err := e.Decide(ctx, in)
				return err
			})
		})
	}
}

// BenchmarkDecideRequest measures an L7 decision on a cached connection.
func BenchmarkDecideRequest(b *testing.B) {
	p, inputs := benchPolicy(10000)
	e, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	req := policy.Request{Input: inputs[0], Method: "GET", Path: "/v1/models/x"}
	runTimed(b, func(int) error {
		d, err := e.DecideRequest(context.Background(), req)
		if err == nil && d.Action != policy.Allow {
			err = fmt.Errorf("unexpected %+v", d)
		}
		return err
	})
}

// BenchmarkNoiseFloor times fixed CPU work that does not allocate (one,
// two and three SHA-256 of 8 KiB; three are about as long as an uncached
// decision), to show how much of a p99 is the machine's own jitter rather
// than the engine's, and from which length on: on a VM whose timer
// interrupts cost tens of microseconds, an operation's p99 jumps once more
// than 1% of the calls are long enough to include one.
func BenchmarkNoiseFloor(b *testing.B) {
	buf := make([]byte, 8192)
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("sha256x%d", n), func(b *testing.B) {
			runTimed(b, func(int) error {
				for range n {
					sha256.Sum256(buf)
				}
				return nil
			})
		})
	}
}

// runTimed runs op b.N times, timing each call, and reports the p50 and
// p99 latency in nanoseconds.
func runTimed(b *testing.B, op func(i int) error) {
	b.Helper()
	durs := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		err := op(i)
		durs[i] = time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns")
}
