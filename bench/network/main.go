// Command network measures moat's network sandbox against DESIGN.md's
// performance budget, on a testbed of two network namespaces (an outer
// one for the sandbox, an upstream one for the server) linked by a veth
// pair: CONNECT bulk throughput through a sandbox's proxy against a direct
// connection, new tunnels per second against Squid, the identity lookup
// and tunnel setup latency with 200 processes in the sandbox, and the
// sidecar's RSS with a one-endpoint and a 10,000-endpoint policy. Each
// measurement is repeated over rounds and printed as median, p10 and p90.
// It needs root; `make bench-network` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// upPort is the upstream server's port.
const upPort = 9000

type options struct {
	moat       string
	rounds     int
	mib        int
	conc       int
	dur        time.Duration
	latN       int
	decisions  int
	benchtime  string
	benchCount int
	noSquid    bool
}

func main() {
	var o options
	flag.StringVar(&o.moat, "moat", "bin/moat", "moat binary (moat-init and moat-sidecar beside it)")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds of each measurement")
	flag.IntVar(&o.mib, "mib", 512, "MiB read per bulk transfer")
	flag.IntVar(&o.conc, "c", 8, "concurrent tunnels in the tunnels-per-second test")
	flag.DurationVar(&o.dur, "d", 3*time.Second, "length of each tunnels-per-second round")
	flag.IntVar(&o.latN, "lat-n", 500, "sequential tunnels per latency round")
	flag.IntVar(&o.decisions, "decisions", 300, "allowed and denied tunnels each before the second RSS reading")
	flag.StringVar(&o.benchtime, "identity-benchtime", "500x", "-benchtime of BenchmarkLookup200")
	flag.IntVar(&o.benchCount, "identity-count", 3, "-count of BenchmarkLookup200 (0: skip it)")
	flag.BoolVar(&o.noSquid, "no-squid", false, "skip the Squid comparison")
	flag.Parse()
	b := &bench{o: o}
	// Interrupted: clean up (namespaces, containers, Squid) and exit.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "bench: %v, cleaning up\n", s)
		b.cleanup()
		os.Exit(1)
	}()
	err := b.run()
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench is one run: its temporary directory, testbed, processes and the
// cleanups that undo them, last first.
type bench struct {
	o        options
	dir      string
	client   string
	tb       *testbed
	mu       sync.Mutex
	undo     []func()
	cleaned  bool
	results  results
	squidVer string
}

// onCleanup registers a cleanup.
func (b *bench) onCleanup(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.undo = append(b.undo, f)
}

// cleanup runs the cleanups once.
func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cleaned {
		return
	}
	b.cleaned = true
	for i := len(b.undo) - 1; i >= 0; i-- {
		b.undo[i]()
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func (b *bench) run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it makes network namespaces and runs containers)")
	}
	moat, err := filepath.Abs(b.o.moat)
	if err != nil {
		return err
	}
	for _, name := range []string{"moat", "moat-init", "moat-sidecar"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(moat), name)); err != nil {
			return fmt.Errorf("%s missing beside %s (make build): %w", name, moat, err)
		}
	}
	if !b.o.noSquid {
		if _, err := exec.LookPath("squid"); err != nil {
			return fmt.Errorf("squid is not installed (apt-get install squid, or -no-squid): %w", err)
		}
		b.squidVer = squidVersion()
	}
	if b.dir, err = os.MkdirTemp("", "moat-bench-net-"); err != nil {
		return err
	}
	b.onCleanup(func() { os.RemoveAll(b.dir) })
	if b.client, err = buildClient(b.dir); err != nil {
		return err
	}
	progress("testbed")
	if b.tb, err = newTestbed(); err != nil {
		return err
	}
	b.onCleanup(b.tb.close)
	up := fmt.Sprintf("%s:%d", b.tb.upIP, upPort)
	server, err := startDaemon("upstream server", in(b.tb.upstream, b.client, "serve", up), filepath.Join(b.dir, "server.log"))
	if err != nil {
		return err
	}
	b.onCleanup(func() { server.stop(5 * time.Second) })
	if _, err := output(b.dir, 20*time.Second, in(b.tb.outer, b.client, "wait", up, "15s")); err != nil {
		return fmt.Errorf("upstream server: %w", err)
	}
	bundle, err := makeBundle(filepath.Join(b.dir, "bundle"), b.tb.outerPath, b.client)
	if err != nil {
		return err
	}
	root := filepath.Join(b.dir, "moat-root")

	// The one-endpoint sandbox: throughput, tunnels, latency, RSS.
	small, err := newMoatEnv(moat, root, b.dir, "small", policyYAML(b.tb, 0))
	if err != nil {
		return err
	}
	b.onCleanup(func() { _ = small.deleteAll() })
	id := fmt.Sprintf("moat-bench-net-%d", os.Getpid())
	progress("sandbox with a one-endpoint policy")
	if err := small.start(bundle, id); err != nil {
		return err
	}
	if b.results.rssSmall, err = b.measureRSS(small, id); err != nil {
		return err
	}
	if err := b.bulk(small, id); err != nil {
		return err
	}
	if err := b.tunnelRate(small, id); err != nil {
		return err
	}
	if err := b.latency(small, id); err != nil {
		return err
	}
	end, err := sidecarRSS(small)
	if err != nil {
		return err
	}
	b.results.rssSmall.end, b.results.rssSmall.peak = end.rss, end.hwm
	if err := small.deleteAll(); err != nil {
		return err
	}

	// The 10,000-endpoint sandbox: RSS only.
	big, err := newMoatEnv(moat, root, b.dir, "big", policyYAML(b.tb, 100))
	if err != nil {
		return err
	}
	b.onCleanup(func() { _ = big.deleteAll() })
	progress("sandbox with a 10,000-endpoint policy")
	if err := big.start(bundle, id+"-big"); err != nil {
		return err
	}
	if b.results.rssBig, err = b.measureRSS(big, id+"-big"); err != nil {
		return err
	}
	if err := big.deleteAll(); err != nil {
		return err
	}

	if b.o.benchCount > 0 {
		progress("go test -bench Lookup200 ./sidecar/identity/")
		if b.results.lookup, err = lookupBench(b.o.benchtime, b.o.benchCount); err != nil {
			return err
		}
	}
	b.report()
	return nil
}

// buildClient builds the static client into dir.
func buildClient(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, "netbench")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, "github.com/moatsandbox/moat/bench/network/client")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if data, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the client: %w\n%s", err, data)
	}
	return out, nil
}

// policyYAML is the benchmark's policy: the client may reach the upstream
// by its address; extra policies of 100 endpoints each (hosts
// h<N>.example.com:443, binary /usr/bin/curl) make it large.
func policyYAML(tb *testbed, extra int) string {
	s := fmt.Sprintf(`version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /bin]
  read_write: [/tmp]
network_policies:
  bench:
    endpoints:
      - host: %s
        port: %d
        allowed_ips: [%s]
    binaries:
      - path: %s
`, tb.upIP, upPort, tb.subnet, clientInRootfs)
	for p := range extra {
		s += fmt.Sprintf("  p%03d:\n    endpoints:\n", p)
		for e := range 100 {
			s += fmt.Sprintf("      - host: h%d.example.com\n        port: 443\n", p*100+e)
		}
		s += "    binaries:\n      - path: /usr/bin/curl\n"
	}
	return s
}
