package hooks

// Fixtures of the network root tests: a test-private outer netns, leak
// counters and helpers that act from inside a namespace. Nothing here
// touches the host's own network.

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// testPool is the address pool of the tests (the admin default).
var testPool = netip.MustParsePrefix("10.200.0.0/16")

// requireRoot skips a test that needs root.
func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("network root test: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
}

// newOuterNetNS makes a private outer netns for one test, pinned under a
// temporary directory and removed when the test ends.
func newOuterNetNS(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "outer")
	if err := NewNetNS(path); err != nil {
		tb.Fatalf("outer netns: %v", err)
	}
	tb.Cleanup(func() {
		if err := RemoveNetNS(path); err != nil {
			tb.Errorf("remove outer netns: %v", err)
		}
	})
	return path
}

// egressSpec is an egress spec for a new sandbox directory on outer.
func egressSpec(tb testing.TB, outer, allocDir string) NetworkSpec {
	tb.Helper()
	return NetworkSpec{
		Dir:          tb.TempDir(),
		OuterNetNS:   outer,
		Pool:         testPool,
		AllocDir:     allocDir,
		Egress:       true,
		ProxyPort:    3128,
		NFLogGroup:   100,
		NFQueue:      100,
		InboundPorts: []uint16{8080},
	}
}

// mustSetup sets a sandbox up and tears it down when the test ends.
func mustSetup(tb testing.TB, spec NetworkSpec) *Network {
	tb.Helper()
	n, err := SetupNetwork(spec)
	if err != nil {
		tb.Fatalf("SetupNetwork: %v", err)
	}
	tb.Cleanup(func() {
		if err := TeardownNetwork(spec.Dir); err != nil {
			tb.Errorf("TeardownNetwork: %v", err)
		}
	})
	return n
}

// leftovers is what a sandbox may leave behind, for before/after counts.
type leftovers struct {
	nsMounts int      // nsfs mounts under this test's temporary directories
	links    []string // links of the outer netns
	tables   []string // nftables tables of the outer netns
	allocs   []string // files and directories under the allocator dir
}

// snapshot records the leftovers of outer ("" skips it) and allocDir.
func snapshot(tb testing.TB, outer, allocDir string) leftovers {
	tb.Helper()
	var l leftovers
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// Only this test's mounts count: other packages' tests run at the
	// same time and pin namespaces of their own.
	top, _, _ := strings.Cut(tb.Name(), "/")
	prefix := filepath.Join(os.TempDir(), top)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		before, after, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(before)
		if ok && strings.HasPrefix(after, "nsfs ") && len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			l.nsMounts++
		}
	}
	if outer != "" {
		inNS(tb, outer, func() error {
			c, err := dialHere()
			if err != nil {
				return err
			}
			defer c.Close()
			links, err := c.rt.LinkList()
			if err != nil {
				return err
			}
			for _, link := range links {
				l.links = append(l.links, link.Attrs().Name)
			}
			tables, err := c.nft.ListTables()
			for _, t := range tables {
				l.tables = append(l.tables, t.Name)
			}
			return err
		})
	}
	_ = filepath.WalkDir(allocDir, func(p string, _ os.DirEntry, err error) error {
		if err == nil && p != allocDir {
			l.allocs = append(l.allocs, p)
		}
		return nil
	})
	slices.Sort(l.links)
	slices.Sort(l.tables)
	return l
}

// checkClean fails unless after has exactly before's leftovers.
func checkClean(tb testing.TB, before, after leftovers) {
	tb.Helper()
	if before.nsMounts != after.nsMounts {
		tb.Errorf("nsfs mounts: %d before, %d after", before.nsMounts, after.nsMounts)
	}
	if !slices.Equal(before.links, after.links) {
		tb.Errorf("outer links: %v before, %v after", before.links, after.links)
	}
	if !slices.Equal(before.tables, after.tables) {
		tb.Errorf("outer nftables tables: %v before, %v after", before.tables, after.tables)
	}
	if !slices.Equal(before.allocs, after.allocs) {
		tb.Errorf("allocator: %v before, %v after", before.allocs, after.allocs)
	}
}

// inNS runs fn on a thread inside the netns pinned at path.
func inNS(tb testing.TB, path string, fn func() error) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := inNetNS(f, fn); err != nil {
		tb.Fatalf("in netns %s: %v", path, err)
	}
}

// dialFrom connects from inside the netns at path; the socket is made
// there, the connection then works from any goroutine.
func dialFrom(tb testing.TB, path, network, addr string, timeout time.Duration) (net.Conn, error) {
	tb.Helper()
	var conn net.Conn
	var derr error
	inNS(tb, path, func() error {
		conn, derr = net.DialTimeout(network, addr, timeout)
		return nil
	})
	return conn, derr
}

// listenIn listens on addr inside the netns at path until the test ends.
func listenIn(tb testing.TB, path, addr string) net.Listener {
	tb.Helper()
	var ln net.Listener
	inNS(tb, path, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	tb.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("ok"))
			_ = c.Close()
		}
	}()
	return ln
}

// refusedFast checks that a TCP connect from the netns at path to addr
// fails at once with a refusal, never by timing out.
func refusedFast(tb testing.TB, path, addr string, want ...error) {
	tb.Helper()
	start := time.Now()
	conn, err := dialFrom(tb, path, "tcp", addr, 3*time.Second)
	if err == nil {
		_ = conn.Close()
		tb.Errorf("connect to %s from the sandbox succeeded", addr)
		return
	}
	if d := time.Since(start); d > time.Second {
		tb.Errorf("connect to %s failed after %v (%v): not fast", addr, d, err)
	}
	for _, w := range want {
		if errors.Is(err, w) {
			tb.Logf("connect to %s: %v after %v", addr, err, time.Since(start))
			return
		}
	}
	tb.Errorf("connect to %s: %v, want one of %v", addr, err, want)
}

// droppedFrom checks that a TCP connect from the netns at path to addr
// goes unanswered (silently dropped).
func droppedFrom(tb testing.TB, path, addr string) {
	tb.Helper()
	conn, err := dialFrom(tb, path, "tcp", addr, 300*time.Millisecond)
	if err == nil {
		_ = conn.Close()
		tb.Errorf("connect to %s succeeded, want it dropped", addr)
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		tb.Errorf("connect to %s: %v, want a timeout (dropped)", addr, err)
	}
}

// readOK dials addr from the netns at path and expects the fixture
// listener's greeting.
func readOK(tb testing.TB, path, addr string) {
	tb.Helper()
	conn, err := dialFrom(tb, path, "tcp", addr, 2*time.Second)
	if err != nil {
		tb.Errorf("connect to %s: %v", addr, err)
		return
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2)
	if _, err := conn.Read(buf); err != nil || string(buf) != "ok" {
		tb.Errorf("read from %s: %q, %v", addr, buf, err)
	}
}

// deleteInnerTable removes the inner rules, as an agent holding
// CAP_NET_ADMIN could.
func deleteInnerTable(tb testing.TB, path string) {
	tb.Helper()
	inNS(tb, path, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: InnerTable, Family: nftables.TableFamilyINet})
		return c.Flush()
	})
}

// readSysctlIn reads a /proc/sys file from inside the netns at path.
func readSysctlIn(tb testing.TB, path, name string) string {
	tb.Helper()
	var out string
	inNS(tb, path, func() error {
		data, err := os.ReadFile("/proc/sys/" + name)
		out = strings.TrimSpace(string(data))
		return err
	})
	return out
}

// isRefusal reports whether err is a refusal a sandboxed program sees.
func isRefusal(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.EPERM)
}
