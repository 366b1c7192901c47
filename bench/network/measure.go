package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// results is everything report prints.
type results struct {
	direct, proxied        []float64 // bulk MB/s per round
	busyDirect, busyProxy  []float64 // machine CPU seconds per GiB moved, per round
	tunMoat, tunSquid      []float64 // tunnels/s per round
	tunDirect              []float64
	cpuMoat, cpuSquid      []float64 // proxy CPU time per tunnel (us) per round
	tunErrors              map[string]int
	setupMoat, setupSqd    [][]float64 // setup p50, p90, p99, max (us) per round
	latAbsent, latFull     []tunnelStats
	procsAbsent, procsFull int
	rssSmall, rssBig       rssReadings
	lookup                 []lookupRun
}

// tunnelStats is the client's JSON report of a tunnels run.
type tunnelStats struct {
	OK         int       `json:"ok"`
	Errors     int       `json:"errors"`
	FirstError string    `json:"first_error"`
	PerSec     float64   `json:"per_sec"`
	Setup      []float64 `json:"setup_us"` // p50, p90, p99, max
	Total      []float64 `json:"total_us"`
}

// rssReadings is the sidecar's VmRSS at three points, its VmHWM, and
// its RssAnon and RssFile after the decisions.
type rssReadings struct {
	ready, decided, end, peak float64
	anon, file                float64
}

// lookupRun is one BenchmarkLookup200 result.
type lookupRun struct{ p50, p99 float64 }

// inSandbox runs the client in the container, through the sidecar.
func (b *bench) inSandbox(e *moatEnv, id string, args ...string) (string, error) {
	return e.exec(id, 5*time.Minute, append([]string{clientInRootfs, args[0], "-proxy", "env"}, args[1:]...)...)
}

// inOuter runs the client in the outer netns with proxy ("" is direct).
func (b *bench) inOuter(proxy string, args ...string) (string, error) {
	argv := append([]string{b.client, args[0], "-proxy", proxy}, args[1:]...)
	return output(b.dir, 5*time.Minute, in(b.tb.outer, argv...))
}

func (b *bench) upstream() string { return fmt.Sprintf("%s:%d", b.tb.upIP, upPort) }

// measureRSS reads the sidecar's RSS once it is ready, then after
// o.decisions allowed tunnels and o.decisions denied ones, each to a
// different host of the policy (uncached decisions).
func (b *bench) measureRSS(e *moatEnv, id string) (rssReadings, error) {
	var r rssReadings
	var err error
	// The sidecar hands its start's memory back a second after it
	// reports ready (cmd/moat-sidecar's reclaimDelay).
	time.Sleep(1300 * time.Millisecond)
	ready, err := sidecarRSS(e)
	if err != nil {
		return r, err
	}
	r.ready = ready.rss
	n := strconv.Itoa(b.o.decisions)
	for _, args := range [][]string{
		{"tunnels", "-target", b.upstream(), "-c", "4", "-n", n},
		{"tunnels", "-target", "h%d.example.com:443", "-c", "4", "-n", n, "-expect", "403"},
	} {
		out, err := b.inSandbox(e, id, args...)
		if err != nil {
			return r, fmt.Errorf("decisions: %w", err)
		}
		var st tunnelStats
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Errors > 0 {
			return r, fmt.Errorf("decisions: %s (%v)\nthe sidecar's last denials:\n%s", strings.TrimSpace(out), err, e.denials(id))
		}
	}
	m, err := sidecarRSS(e)
	r.decided, r.peak, r.anon, r.file = m.rss, m.hwm, m.anon, m.file
	return r, err
}

// sidecarRSS reads the memory status of the env's sidecar.
func sidecarRSS(e *moatEnv) (memStatus, error) {
	pid, err := e.sidecarPid()
	if err != nil {
		return memStatus{}, err
	}
	return rss(pid)
}

// bulk measures CONNECT bulk throughput, proxied and direct, in rounds
// that alternate which goes first.
func (b *bench) bulk(e *moatEnv, id string) error {
	mib := strconv.Itoa(b.o.mib)
	for r := range b.o.rounds {
		progress("bulk round %d/%d", r+1, b.o.rounds)
		for k := range 2 {
			var out string
			var err error
			// The whole machine's CPU time per GiB: on a machine whose
			// CPUs the client, the server and the proxy share, it is
			// what bounds the throughput.
			busy0, err := machineBusy()
			if err != nil {
				return err
			}
			if (r+k)%2 == 0 {
				out, err = b.inOuter("", "bulk", "-target", b.upstream(), "-mib", mib)
			} else {
				out, err = b.inSandbox(e, id, "bulk", "-target", b.upstream(), "-mib", mib)
			}
			if err != nil {
				return fmt.Errorf("bulk: %w", err)
			}
			busy1, err := machineBusy()
			if err != nil {
				return err
			}
			var res struct{ Mbps float64 }
			if err := json.Unmarshal([]byte(out), &res); err != nil || res.Mbps <= 0 {
				return fmt.Errorf("bulk: client printed %q (%v)", out, err)
			}
			perGiB := (busy1 - busy0).Seconds() / (float64(b.o.mib) / 1024)
			if (r+k)%2 == 0 {
				b.results.direct = append(b.results.direct, res.Mbps)
				b.results.busyDirect = append(b.results.busyDirect, perGiB)
			} else {
				b.results.proxied = append(b.results.proxied, res.Mbps)
				b.results.busyProxy = append(b.results.busyProxy, perGiB)
			}
		}
	}
	return nil
}

// tunnelRate measures new tunnels per second through the sidecar, Squid
// and (for reference) with no proxy, rotating the order every round.
func (b *bench) tunnelRate(e *moatEnv, id string) error {
	var squidAddr string
	var squidPid int
	if !b.o.noSquid {
		sq, dir, err := startSquid(b.tb, b.client, upPort)
		if dir != "" {
			b.onCleanup(func() { os.RemoveAll(dir) })
		}
		if err != nil {
			return err
		}
		defer sq.stop(5 * time.Second)
		b.onCleanup(func() { sq.stop(5 * time.Second) })
		squidAddr = fmt.Sprintf("%s:%d", b.tb.outerIP, squidPort)
		squidPid = sq.cmd.Process.Pid
	}
	sidecarPid, err := e.sidecarPid()
	if err != nil {
		return err
	}
	b.results.tunErrors = map[string]int{}
	args := []string{"tunnels", "-target", b.upstream(), "-c", strconv.Itoa(b.o.conc), "-d", b.o.dur.String()}
	kinds := []string{"moat", "squid", "direct"}
	if b.o.noSquid {
		kinds = []string{"moat", "direct"}
	}
	for r := range b.o.rounds {
		progress("tunnels round %d/%d", r+1, b.o.rounds)
		for k := range kinds {
			kind := kinds[(r+k)%len(kinds)]
			var out string
			var err error
			// The proxy's CPU time per tunnel: the one figure of this
			// test that does not depend on what else the machine runs.
			proxyPid := map[string]int{"moat": sidecarPid, "squid": squidPid}[kind]
			var cpu0 time.Duration
			if proxyPid != 0 {
				if cpu0, err = cpuTime(proxyPid); err != nil {
					return fmt.Errorf("tunnels via %s: %w", kind, err)
				}
			}
			switch kind {
			case "moat":
				out, err = b.inSandbox(e, id, args...)
			case "squid":
				out, err = b.inOuter(squidAddr, args...)
			default:
				out, err = b.inOuter("", args...)
			}
			if err != nil {
				return fmt.Errorf("tunnels via %s: %w", kind, err)
			}
			var st tunnelStats
			if err := json.Unmarshal([]byte(out), &st); err != nil || st.OK == 0 {
				return fmt.Errorf("tunnels via %s: client printed %q (%v)", kind, out, err)
			}
			if st.Errors > 0 {
				b.results.tunErrors[kind] += st.Errors
				progress("tunnels via %s: %d errors, first: %s", kind, st.Errors, st.FirstError)
			}
			var cpuPer float64
			if proxyPid != 0 {
				cpu1, err := cpuTime(proxyPid)
				if err != nil {
					return fmt.Errorf("tunnels via %s: %w", kind, err)
				}
				cpuPer = float64((cpu1 - cpu0).Microseconds()) / float64(st.OK)
			}
			switch kind {
			case "moat":
				b.results.cpuMoat = append(b.results.cpuMoat, cpuPer)
				b.results.tunMoat = append(b.results.tunMoat, st.PerSec)
				b.results.setupMoat = append(b.results.setupMoat, st.Setup)
			case "squid":
				b.results.cpuSquid = append(b.results.cpuSquid, cpuPer)
				b.results.tunSquid = append(b.results.tunSquid, st.PerSec)
				b.results.setupSqd = append(b.results.setupSqd, st.Setup)
			default:
				b.results.tunDirect = append(b.results.tunDirect, st.PerSec)
			}
		}
	}
	return nil
}

// latency measures sequential tunnel latency through the sidecar with
// only the container's own processes, then with 200 sleeping processes
// more, in every round.
func (b *bench) latency(e *moatEnv, id string) error {
	initPid, err := e.initPid(id)
	if err != nil {
		return err
	}
	args := []string{"tunnels", "-target", b.upstream(), "-c", "1", "-n", strconv.Itoa(b.o.latN)}
	one := func() (tunnelStats, error) {
		var st tunnelStats
		out, err := b.inSandbox(e, id, args...)
		if err != nil {
			return st, fmt.Errorf("latency: %w", err)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Errors > 0 || len(st.Setup) != 4 {
			return st, fmt.Errorf("latency: client printed %q (%v)", out, err)
		}
		return st, nil
	}
	for r := range b.o.rounds {
		progress("latency round %d/%d", r+1, b.o.rounds)
		b.results.procsAbsent = processesIn(initPid)
		st, err := one()
		if err != nil {
			return err
		}
		b.results.latAbsent = append(b.results.latAbsent, st)
		sl, err := e.startSleepers(id)
		if err != nil {
			return err
		}
		b.results.procsFull = processesIn(initPid)
		st, err = one()
		sl.stop()
		if err != nil {
			return err
		}
		b.results.latFull = append(b.results.latFull, st)
	}
	return nil
}

// lookupBench runs BenchmarkLookup200 of sidecar/identity and returns the
// p50 and p99 (us) of each run.
func lookupBench(benchtime string, count int) ([]lookupRun, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	mod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	cmd := exec.Command(goBin, "test", "-run", "^$", "-bench", "^BenchmarkLookup200$",
		"-benchtime", benchtime, "-count", strconv.Itoa(count), "./sidecar/identity/")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("BenchmarkLookup200: %w\n%s", err, out)
	}
	var runs []lookupRun
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "BenchmarkLookup200") {
			continue
		}
		var lr lookupRun
		for i := 1; i < len(f); i++ {
			v, err := strconv.ParseFloat(f[i-1], 64)
			if err != nil {
				continue
			}
			switch f[i] {
			case "p50-us":
				lr.p50 = v
			case "p99-us":
				lr.p99 = v
			}
		}
		runs = append(runs, lr)
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("BenchmarkLookup200 printed no result:\n%s", out)
	}
	return runs, nil
}
