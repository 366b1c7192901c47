package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The scale tests run sandboxes in the host's network namespace (no
// network namespace in the spec), where every sandbox gets its own inner
// netns, veth, /30 from the allocator, outer nftables table and sidecar:
// the case where sandboxes share an outer netns and must not meet.

// newHostTestbed is a testbed whose upstream netns is linked to the host's
// netns, so host-networked sandboxes' sidecars reach it.
func newHostTestbed(t *testing.T) *testbed {
	t.Helper()
	requireCommands(t, "ip")
	n := int(testbedSeq.Add(1)) + os.Getpid()%100*2
	tag := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	b := &testbed{
		t:        t,
		upstream: fmt.Sprintf("10.78.%d.2", n%250),
		subnet:   fmt.Sprintf("10.78.%d.0/24", n%250),
		names:    []string{"moat-e2e-hup-" + tag},
	}
	t.Cleanup(b.cleanup)
	veth := fmt.Sprintf("mh2e%d", n)
	for _, argv := range [][]string{
		{"netns", "add", b.names[0]},
		{"link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b", "netns", b.names[0]},
		{"addr", "add", fmt.Sprintf("10.78.%d.1/24", n%250), "dev", veth + "a"},
		{"-n", b.names[0], "addr", "add", b.upstream + "/24", "dev", veth + "b"},
		{"link", "set", veth + "a", "up"},
		{"-n", b.names[0], "link", "set", veth + "b", "up"},
		{"-n", b.names[0], "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	b.upstreamNS = "/run/netns/" + b.names[0]
	return b
}

// hostBundle is sandboxBundle without a network namespace (host
// networking), with the policy inline in the dev.moat.policy annotation.
func hostBundle(t *testing.T, policyYAML string, args ...string) string {
	t.Helper()
	dir := sandboxBundle(t, args...)
	spec, err := fixtures.ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Namespaces = slicesDelete(spec.Linux.Namespaces, "network")
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	if policyYAML != "" {
		spec.Annotations["dev.moat.policy"] = policyYAML
	}
	if err := fixtures.WriteSpec(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

// portPolicy lets the probe reach the upstream on one port.
func portPolicy(b *testbed, port int) string {
	return fmt.Sprintf(`version: 1
filesystem_policy:
  read_only: [/usr, /lib, /etc, /proc, /bin]
  read_write: [/tmp]
network_policies:
  p%d:
    endpoints:
      - {host: %s, port: %d, allowed_ips: [%s]}
    binaries:
      - path: /usr/bin/probe
`, port, b.upstream, port, b.subnet)
}

// leaks counts what sandboxes leave on the host: veth links and nftables
// tables named moat*, nsfs mounts and sidecar processes under stateDir,
// allocator files.
type leaks struct{ links, tables, mounts, procs, allocs int }

func countLeaks(t *testing.T, stateDir string) leaks {
	t.Helper()
	l := leaks{links: netLinks(t), mounts: nsMounts(t, stateDir)}
	c := &nftables.Conn{}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, "moat") {
			l.tables++
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, _ := os.ReadFile(p); strings.Contains(string(data), stateDir) {
			l.procs++
		}
	}
	_ = filepath.Walk(filepath.Join(stateDir, "alloc"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			l.allocs++
		}
		return nil
	})
	return l
}

// TestNetworkManySandboxes: 50 sandboxes run at once in the host's netns,
// each deciding its own traffic with its own policy, and leave nothing
// behind.
func TestNetworkManySandboxes(t *testing.T) {
	const count = 50
	b := newHostTestbed(t)
	b.serve(8080, "on 8080")
	b.serve(9090, "on 9090")
	e := newSandboxEnv(t, sandboxPolicy)
	stateDir := filepath.Join(filepath.Dir(e.config), "moat-state")
	before := countLeaks(t, stateDir)

	ids := make([]string, count)
	for i := range ids {
		ids[i] = e.id(fmt.Sprintf("many%d", i))
		port := 8080 + (i%2)*1010 // even: 8080, odd: 9090
		e.mustMoat("run", "-d", "--bundle", hostBundle(t, portPolicy(b, port), "sleep", "300"), ids[i])
	}
	if l := countLeaks(t, stateDir); l.procs != before.procs+count || l.tables != before.tables+count {
		t.Errorf("%d sandboxes: %d sidecars, %d outer tables (before: %+v)", count, l.procs-before.procs, l.tables-before.tables, before)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			proxy := "10.200.0.1:3128"
			if st := e.state(id); st.Annotations["dev.moat.proxy"] != "" {
				proxy = st.Annotations["dev.moat.proxy"]
			}
			script := fmt.Sprintf("probe connect %s %s:8080 /; probe connect %s %s:9090 /", proxy, b.upstream, proxy, b.upstream)
			out, stderr, code := e.moat("exec", id, "sh", "-c", script)
			want8080, want9090 := " 200 ", " 403 "
			if i%2 == 1 {
				want8080, want9090 = " 403 ", " 200 "
			}
			first, second, _ := strings.Cut(out, "\nHTTP/")
			if code != 0 || !strings.Contains(first, want8080) || !strings.Contains("HTTP/"+second, want9090) {
				t.Errorf("sandbox %d (%s): exit %d, output %q, stderr %s", i, id, code, out, stderr)
			}
			recs, _, _ := e.moat("denials", "--json", "--all", id)
			if n := strings.Count(recs, `"sandbox":"`+id+`"`); n != 2 || strings.Count(recs, "\n") != 2 {
				t.Errorf("sandbox %d: its log holds %d of its records, %d in all:\n%s", i, n, strings.Count(recs, "\n"), recs)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		e.mustMoat("delete", "--force", id)
	}
	if after := countLeaks(t, stateDir); after != before {
		t.Errorf("left behind: before %+v, after %+v", before, after)
	}
}

// TestNetworkCycles: 200 full-sandbox create/start/delete cycles, in the
// host's netns and in fresh netns moat makes, leave no netns, veth,
// nftables table, mount, allocation, cgroup or process behind.
func TestNetworkCycles(t *testing.T) {
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	b := newHostTestbed(t)
	b.serve(8080, "on 8080")
	e := newSandboxEnv(t, portPolicy(b, 8080))
	stateDir := filepath.Join(filepath.Dir(e.config), "moat-state")
	before := countLeaks(t, stateDir)
	hostNet := hostBundle(t, "", "probe", "connect", "10.200.0.1:3128", b.upstream+":8080", "/")
	fresh := sandboxBundle(t, "true") // a network namespace moat makes
	for i := 0; i < cycles; i++ {
		id := e.id("cycle")
		bundle, want := hostNet, "on 8080"
		if i%2 == 1 {
			bundle, want = fresh, ""
		}
		out, stderr, code := e.moat("run", "--bundle", bundle, id)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("cycle %d: exit %d, output %q, stderr %s", i, code, out, stderr)
		}
		assertNoCgroup(t, id)
	}
	if after := countLeaks(t, stateDir); after != before {
		t.Errorf("after %d cycles: before %+v, after %+v", cycles, before, after)
	}
}
