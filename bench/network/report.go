package main

import (
	"fmt"
	"slices"
	"strings"
)

// report prints the results as tables of median, p10 and p90 over rounds.
func (b *bench) report() {
	r := &b.results
	o := b.o
	fmt.Printf("Network sandbox: %d rounds each; median, p10, p90 over the rounds\n", o.rounds)
	fmt.Printf("(testbed: outer and upstream netns linked by a veth; the server in the upstream netns)\n\n")

	fmt.Printf("1. CONNECT bulk throughput, %d MiB per transfer\n", o.mib)
	header()
	row("direct (outer netns)", r.direct, mbps, "")
	row("through the sandbox's proxy", r.proxied, mbps, "")
	row("ratio proxy/direct (pairwise)", ratios(r.proxied, r.direct), times, "target >= 0.9")
	row("machine CPU per GiB, direct", r.busyDirect, secs, "all CPUs, anything but idle")
	row("machine CPU per GiB, proxied", r.busyProxy, secs, "")
	row("ratio proxied/direct CPU (pairwise)", ratios(r.busyProxy, r.busyDirect), times, "")

	fmt.Printf("\n2. New tunnels per second: CONNECT + %d-byte fetch, %d concurrent, %v per round\n", 64, o.conc, o.dur)
	header()
	row("moat sidecar (client in sandbox)", r.tunMoat, perSec, "")
	if !o.noSquid {
		row(b.squidVer+" (client in outer netns)", r.tunSquid, perSec, "")
	}
	row("no proxy (outer netns)", r.tunDirect, perSec, "reference")
	if !o.noSquid {
		row("ratio moat/squid (pairwise)", ratios(r.tunMoat, r.tunSquid), times, "target >= 2")
	}
	row("proxy CPU per tunnel, moat", r.cpuMoat, us, "sidecar user+system")
	if !o.noSquid {
		row("proxy CPU per tunnel, squid", r.cpuSquid, us, "")
		row("ratio squid/moat CPU (pairwise)", ratios(r.cpuSquid, r.cpuMoat), times, "")
	}
	row("setup p50, moat", col(r.setupMoat, 0), us, "dial to 200")
	row("setup p99, moat", col(r.setupMoat, 2), us, "")
	if !o.noSquid {
		row("setup p50, squid", col(r.setupSqd, 0), us, "")
		row("setup p99, squid", col(r.setupSqd, 2), us, "")
	}
	// Every round, in order: Squid's cost per tunnel goes in a cycle of
	// tens of seconds under this churn (docs/benchmarks.md), so a median
	// of a few rounds depends on where they fell in it.
	rounds("rounds, moat", r.tunMoat, r.cpuMoat)
	if !o.noSquid {
		rounds("rounds, squid", r.tunSquid, r.cpuSquid)
	}
	for kind, n := range r.tunErrors {
		fmt.Printf("  %d failed tunnels via %s (not counted)\n", n, kind)
	}

	fmt.Printf("\n3. Identity lookup and tunnel setup with 200 processes in the sandbox\n")
	header()
	if len(r.lookup) > 0 {
		var p50, p99 []float64
		for _, l := range r.lookup {
			p50, p99 = append(p50, l.p50), append(p99, l.p99)
		}
		row(fmt.Sprintf("Lookup200 p50 (%d runs of %s)", len(r.lookup), o.benchtime), p50, us, "go test ./sidecar/identity")
		row("Lookup200 p99", p99, us, "target < 1000 us")
	}
	pick := func(st []tunnelStats, total bool, i int) []float64 {
		var v []float64
		for _, s := range st {
			if total {
				v = append(v, s.Total[i])
			} else {
				v = append(v, s.Setup[i])
			}
		}
		return v
	}
	for _, c := range []struct {
		label string
		procs int
		st    []tunnelStats
	}{{"", r.procsAbsent, r.latAbsent}, {"", r.procsFull, r.latFull}} {
		row(fmt.Sprintf("setup p50, %d procs in sandbox", c.procs), pick(c.st, false, 0), us, fmt.Sprintf("%d sequential tunnels", o.latN))
		row(fmt.Sprintf("setup p99, %d procs in sandbox", c.procs), pick(c.st, false, 2), us, "")
		row(fmt.Sprintf("total p99, %d procs in sandbox", c.procs), pick(c.st, true, 2), us, "setup + fetch + close")
	}

	fmt.Printf("\n4. Sidecar memory (MiB)\n")
	fmt.Printf("%-30s %11s %15s %11s %6s %18s\n", "policy", "VmRSS ready", "after decisions", "after tests", "VmHWM", "anon/file decided")
	rssRow := func(name string, x rssReadings) {
		fmt.Printf("%-30s %11.1f %15.1f %11s %6.1f %18s\n", name, x.ready, x.decided, fmtMiB(x.end), x.peak,
			fmt.Sprintf("%.1f/%.1f", x.anon, x.file))
	}
	rssRow("1 endpoint", r.rssSmall)
	rssRow("10,000 endpoints (100 x 100)", r.rssBig)
	fmt.Printf("(after decisions: %d allowed tunnels, then %d denied ones to distinct hosts; target < 30 MiB with 10,000 endpoints)\n",
		o.decisions, o.decisions)
}

func header() { fmt.Printf("%-36s %12s %12s %12s\n", "", "median", "p10", "p90") }

// row prints the median, p10 and p90 of v.
func row(name string, v []float64, f func(float64) string, note string) {
	if len(v) == 0 {
		return
	}
	fmt.Printf("%-36s %12s %12s %12s  %s\n", name, f(pct(v, 50)), f(pct(v, 10)), f(pct(v, 90)), note)
}

// rounds prints each round's tunnels per second and proxy CPU per tunnel,
// in the order the rounds ran.
func rounds(name string, rate, cpu []float64) {
	parts := make([]string, len(rate))
	for i := range rate {
		parts[i] = perSec(rate[i])
		if i < len(cpu) {
			parts[i] += " " + us(cpu[i])
		}
	}
	fmt.Printf("%s: %s\n", name, strings.Join(parts, ", "))
}

// col is column i of each round's percentiles.
func col(v [][]float64, i int) []float64 {
	var c []float64
	for _, x := range v {
		c = append(c, x[i])
	}
	return c
}

// ratios is a[i]/b[i] for each round.
func ratios(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		r = append(r, a[i]/b[i])
	}
	return r
}

// pct is the p-th percentile of v, as bench/start computes it.
func pct(v []float64, p int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)*p/100]
}

func mbps(v float64) string   { return fmt.Sprintf("%.0f MB/s", v) }
func perSec(v float64) string { return fmt.Sprintf("%.0f/s", v) }
func times(v float64) string  { return fmt.Sprintf("%.2fx", v) }
func us(v float64) string     { return fmt.Sprintf("%.0f us", v) }
func secs(v float64) string   { return fmt.Sprintf("%.2f s", v) }
func fmtMiB(v float64) string {
	if v == 0 {
		return "-"
	}
	return strings.TrimSpace(fmt.Sprintf("%.1f", v))
}
