package identity

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkLookup200 measures Lookup for new connections with 200
// processes in the sandbox: 8 connectors (each a helper under a shell,
// opening a new connection per iteration, round robin), 20 helpers that
// each hold a connection, and a shell with 155 sleeping children. It
// reports the p50 and p99 latency of Lookup alone.
func BenchmarkLookup200(b *testing.B) {
	const connectors, holders = 8, 20
	const sleepers = 200 - 2*connectors - holders - 1 // minus the sleepers' shell
	s := newSandboxNet(b)
	r := newResolver(b, s)
	helper := helperCopy(b, b.TempDir(), "agent")

	sl := s.start(b, "", nil, "/bin/sh", "-c", `i=0; while [ $i -lt `+strconv.Itoa(sleepers)+` ]; do sleep 1000 & i=$((i+1)); done; echo started; wait`)
	if got := sl.line(b); got != "started" {
		b.Fatalf("sleepers: %q", got)
	}
	for i := 0; i < holders; i++ {
		s.start(b, "connect", nil, helper).pid(b)
		s.accept(b)
	}
	conns := make([]*child, connectors)
	for i := range conns {
		conns[i] = s.start(b, "serve", nil, "/bin/sh", "-c", `"$0"; exit $?`, helper)
	}
	ctx := context.Background()
	next := func(i int) (*Process, time.Duration) {
		c := conns[i%connectors]
		if _, err := c.stdin.Write([]byte("\n")); err != nil {
			b.Fatal(err)
		}
		if got := c.line(b); got != "ok" {
			b.Fatalf("connector: %q", got)
		}
		client, server := s.accept(b)
		start := time.Now()
		p, err := r.Lookup(ctx, client, server)
		d := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		return p, d
	}
	for i := 0; i < connectors; i++ { // first sight: hashing, full reads
		if p, _ := next(i); len(p.Ancestors) != 1 {
			b.Fatalf("connector's ancestors: %+v", p.Ancestors)
		}
	}

	lat := make([]time.Duration, 0, b.N)
	reads := r.procs.fdReads
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, d := next(i)
		lat = append(lat, d)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
	b.ReportMetric(float64(r.procs.fdReads-reads)/float64(b.N), "fd-reads/op")
	b.ReportMetric(0, "ns/op") // the loop mostly waits for connections
}
