package hooks

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestNetworkEgress(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, outer, allocDir)

	spec := egressSpec(t, outer, allocDir)
	n, err := SetupNetwork(spec)
	if err != nil {
		t.Fatalf("SetupNetwork: %v", err)
	}
	defer func() {
		if err := TeardownNetwork(spec.Dir); err != nil {
			t.Errorf("TeardownNetwork: %v", err)
		}
		if err := TeardownNetwork(spec.Dir); err != nil {
			t.Errorf("second TeardownNetwork: %v", err)
		}
		checkClean(t, before, snapshot(t, outer, allocDir))
	}()

	if got, want := n.OuterAddr, netip.MustParsePrefix("10.200.0.1/30"); got != want {
		t.Errorf("OuterAddr = %v, want %v", got, want)
	}
	if got, want := n.InnerAddr, netip.MustParsePrefix("10.200.0.2/30"); got != want {
		t.Errorf("InnerAddr = %v, want %v", got, want)
	}
	if got, want := n.Proxy, netip.MustParseAddrPort("10.200.0.1:3128"); got != want {
		t.Errorf("Proxy = %v, want %v", got, want)
	}
	if n.MTU != defaultMTU || n.VethInner != "eth0" || len(n.VethOuter) > 15 {
		t.Errorf("MTU %d, veth %q/%q", n.MTU, n.VethOuter, n.VethInner)
	}
	loaded, err := LoadNetwork(spec.Dir)
	if err != nil || !reflect.DeepEqual(loaded, n) {
		t.Errorf("LoadNetwork = %+v, %v; want %+v", loaded, err, n)
	}
	log := listenNFLog(t, n.InnerPath, spec.NFLogGroup)
	f, err := n.OpenInner()
	if err != nil {
		t.Fatalf("OpenInner: %v", err)
	}
	_ = f.Close()

	t.Run("inner links", func(t *testing.T) { checkInnerLinks(t, n) })
	t.Run("rules", func(t *testing.T) {
		checkRuleCounts(t, n.InnerPath, InnerTable, map[string]int{"output": 13, "input": 3})
		checkRuleCounts(t, outer, n.Table, map[string]int{"forward": 2, "input": 3})
	})
	if v := readSysctlIn(t, n.InnerPath, "net/ipv6/conf/eth0/disable_ipv6"); v != "1" {
		t.Errorf("inner eth0 disable_ipv6 = %q, want 1", v)
	}

	listenIn(t, outer, n.Proxy.String())
	listenIn(t, outer, "0.0.0.0:2222")
	// New TCP connections go through the sidecar's queue, which answers
	// NF_REPEAT with RejectMark: refused at once, and never logged twice.
	queue := listenNFQueue(t, n.InnerPath, spec.NFQueue)
	readOK(t, n.InnerPath, n.Proxy.String())
	outerAddr := n.OuterAddr.Addr().String()
	refusedFast(t, n.InnerPath, "192.0.2.1:80", unix.ECONNREFUSED)
	refusedFast(t, n.InnerPath, net.JoinHostPort(outerAddr, "2222"), unix.ECONNREFUSED)
	refusedFast(t, n.InnerPath, "[2001:db8::1]:443", unix.ECONNREFUSED)
	checkUDPRefused(t, n.InnerPath, "192.0.2.1:53")
	checkICMPRefused(t, n.InnerPath, "192.0.2.3")
	// A UDP flood: what exceeds the queue's rate limit is logged and
	// refused without the detour.
	udpFlood(t, n.InnerPath, "192.0.2.2:53", 300)
	// A send returns once its datagram is queued; the listener may read
	// it a little later.
	queue.waitFor(netip.MustParseAddrPort("192.0.2.2:53"), 5*time.Second)
	queued := queue.queued()
	for _, dst := range []string{"192.0.2.1:80", net.JoinHostPort(outerAddr, "2222"), "[2001:db8::1]:443", "192.0.2.1:53", "192.0.2.2:53"} {
		if !queued[netip.MustParseAddrPort(dst)] {
			t.Errorf("no queued SYN or datagram to %s (queued: %v)", dst, queued)
		}
	}
	if queued[n.Proxy] {
		t.Errorf("the connection to the proxy was queued: %v", queued)
	}
	pinged := false
	for dst := range queued {
		pinged = pinged || dst.Addr() == netip.MustParseAddr("192.0.2.3")
	}
	if !pinged {
		t.Errorf("no queued echo request to 192.0.2.3 (queued: %v)", queued)
	}
	logged := log.logged(t)
	if !logged[netip.MustParseAddr("192.0.2.2")] {
		t.Errorf("no NFLOG message for the UDP flood to 192.0.2.2 past the queue's rate limit (logged: %v)", logged)
	}
	for _, dst := range []string{outerAddr, "2001:db8::1"} {
		if logged[netip.MustParseAddr(dst)] {
			t.Errorf("the queued SYN to %s was logged to NFLOG too (logged: %v)", dst, logged)
		}
	}
	// With nobody on the queue (a dead sidecar) the SYN is dropped: the
	// connect times out and never gets through.
	queue.stop()
	droppedFrom(t, n.InnerPath, "192.0.2.1:80")
	droppedFrom(t, n.InnerPath, net.JoinHostPort(outerAddr, "2222"))
	readOK(t, n.InnerPath, n.Proxy.String())

	// Inbound: the sidecar's forwarder reaches the declared port only.
	listenIn(t, n.InnerPath, "0.0.0.0:8080")
	readOK(t, n.InnerPath, net.JoinHostPort(n.InnerAddr.Addr().String(), "8080")) // its own address
	readOK(t, n.InnerPath, "127.0.0.1:8080")
	listenIn(t, n.InnerPath, "0.0.0.0:9090")
	readOK(t, outer, net.JoinHostPort(n.InnerAddr.Addr().String(), "8080"))
	droppedFrom(t, outer, net.JoinHostPort(n.InnerAddr.Addr().String(), "9090"))
}

// checkInnerLinks checks lo and eth0 of the inner netns and its route.
func checkInnerLinks(t *testing.T, n *Network) {
	inNS(t, n.InnerPath, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("inner lo is down")
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if eth.Attrs().Flags&net.FlagUp == 0 || eth.Attrs().MTU != n.MTU {
			t.Errorf("inner eth0: flags %v, MTU %d", eth.Attrs().Flags, eth.Attrs().MTU)
		}
		addrs, err := netlink.AddrList(eth, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != n.InnerAddr.String() {
			t.Errorf("inner eth0 addresses %v, want only %v", addrs, n.InnerAddr)
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var gw bool
		for _, r := range routes {
			gw = gw || (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == n.OuterAddr.Addr().String()
		}
		if !gw {
			t.Errorf("no default route via %v in %v", n.OuterAddr.Addr(), routes)
		}
		return nil
	})
}

// checkRuleCounts checks the number of rules of each chain of an inet table
// in the netns at path.
func checkRuleCounts(t *testing.T, path, table string, want map[string]int) {
	inNS(t, path, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tb := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
		for chain, n := range want {
			rules, err := c.GetRules(tb, &nftables.Chain{Name: chain, Table: tb})
			if err != nil {
				return err
			}
			if len(rules) != n {
				t.Errorf("%s %s: %d rules, want %d", table, chain, len(rules), n)
			}
		}
		return nil
	})
}

// checkThreads fails if a thread of the test process is left in another
// network namespace than the process's.
func checkThreads(t *testing.T) {
	t.Helper()
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		if got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net")); err == nil && got != want {
			t.Errorf("thread %s is in %s, want %s", task.Name(), got, want)
		}
	}
}

func TestNewNetNS(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	if err := NewNetNS(path); err != nil {
		t.Fatal(err)
	}
	if err := NewNetNS(path); err == nil {
		t.Error("NewNetNS over an existing pin succeeded")
	}
	inNS(t, path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
			t.Error("lo is down")
		}
		return err
	})
	bad := &Network{InnerPath: path, InnerInode: 1}
	if f, err := bad.OpenInner(); err == nil {
		_ = f.Close()
		t.Error("OpenInner accepted a netns of another inode")
	}
	for range 2 {
		if err := RemoveNetNS(path); err != nil {
			t.Errorf("RemoveNetNS: %v", err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin left: %v", err)
	}
	checkThreads(t)
}

// checkUDPRefused sends a datagram from the netns at path and expects the
// send or the next read to be refused at once.
func checkUDPRefused(t *testing.T, path, addr string) {
	conn, err := dialFrom(t, path, "udp", addr, time.Second)
	if err != nil {
		t.Fatalf("udp socket: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err = conn.Write([]byte("query")); err == nil {
		_, err = conn.Read(make([]byte, 16))
	}
	t.Logf("udp to %s: %v", addr, err)
	if !isRefusal(err) {
		t.Errorf("udp to %s: %v, want a refusal", addr, err)
	}
}

// udpFlood sends n datagrams to addr from the netns at path as fast as it
// can, ignoring the refusals.
func udpFlood(t *testing.T, path, addr string, n int) {
	conn, err := dialFrom(t, path, "udp", addr, time.Second)
	if err != nil {
		t.Fatalf("udp socket: %v", err)
	}
	defer conn.Close()
	for range n {
		_, _ = conn.Write([]byte("flood"))
	}
}

// checkICMPRefused sends an echo request from the netns at path and
// expects it refused: an error on send, or a destination-unreachable reply.
func checkICMPRefused(t *testing.T, path, dst string) {
	var pc net.PacketConn
	inNS(t, path, func() (err error) {
		pc, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	defer pc.Close()
	echo := []byte{8, 0, 0xf7, 0xfe, 0, 1, 0, 0} // type 8, checksum of the rest
	_, err := pc.WriteTo(echo, &net.IPAddr{IP: net.ParseIP(dst)})
	if err != nil {
		t.Logf("icmp echo to %s: %v", dst, err)
		if !isRefusal(err) {
			t.Errorf("icmp echo to %s: %v, want a refusal", dst, err)
		}
		return
	}
	_ = pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Errorf("icmp echo to %s: no refusal (%v)", dst, err)
			return
		}
		if n > 0 && buf[0] == 3 { // destination unreachable
			t.Logf("icmp echo to %s: unreachable code %d", dst, buf[1])
			return
		}
	}
}

func TestNetworkNoEgress(t *testing.T) {
	requireRoot(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, "", allocDir)
	dir := t.TempDir()
	// The queue is for egress sandboxes only.
	n, err := SetupNetwork(NetworkSpec{Dir: dir, NFLogGroup: 100, NFQueue: 100})
	if err != nil {
		t.Fatalf("SetupNetwork: %v", err)
	}
	if n.Proxy.IsValid() || n.VethOuter != "" || n.Alloc != "" {
		t.Errorf("no-egress network has egress pieces: %+v", n)
	}
	inNS(t, n.InnerPath, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		if len(links) != 1 || links[0].Attrs().Name != "lo" || links[0].Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("inner links %v, want lo up only", links)
		}
		return nil
	})
	checkNoTables(t, n.InnerPath)
	ln := listenIn(t, n.InnerPath, "127.0.0.1:0")
	readOK(t, n.InnerPath, ln.Addr().String())
	ln6 := listenIn(t, n.InnerPath, "[::1]:0")
	readOK(t, n.InnerPath, ln6.Addr().String())
	checkUnreachable(t, n.InnerPath)
	for range 2 {
		if err := TeardownNetwork(dir); err != nil {
			t.Errorf("TeardownNetwork: %v", err)
		}
	}
	checkClean(t, before, snapshot(t, "", allocDir))
}

// checkUnreachable checks that nothing but loopback is reachable from the
// netns at path, at once: TCP over IPv4 and IPv6, and UDP.
func checkUnreachable(t *testing.T, path string) {
	t.Helper()
	refusedFast(t, path, "192.0.2.1:80", unix.ENETUNREACH)
	refusedFast(t, path, "[2001:db8::1]:80", unix.ENETUNREACH)
	conn, err := dialFrom(t, path, "udp", "192.0.2.1:53", time.Second)
	if err == nil {
		_, err = conn.Write([]byte("query"))
		_ = conn.Close()
	}
	if !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("udp to 192.0.2.1:53: %v, want ENETUNREACH", err)
	}
}

// checkNoTables checks that the netns at path has no nftables table.
func checkNoTables(t *testing.T, path string) {
	t.Helper()
	inNS(t, path, func() error {
		c, err := dialHere()
		if err != nil {
			return err
		}
		defer c.Close()
		tables, err := c.nft.ListTables()
		if err != nil {
			return err
		}
		for _, tb := range tables {
			t.Errorf("inner netns has table %s", tb.Name)
		}
		return nil
	})
}

// TestStartNetworkNoEgress: StartNetwork hands back the inner netns at
// once and finishes its loopback and state in the background;
// finish reports it done, every time, and the result is SetupNetwork's.
func TestStartNetworkNoEgress(t *testing.T) {
	requireRoot(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, "", allocDir)
	dir := t.TempDir()
	n, finish, err := StartNetwork(NetworkSpec{Dir: dir, NFLogGroup: 100})
	if err != nil {
		t.Fatalf("StartNetwork: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(n.InnerPath, &st); err != nil || st.Ino != n.InnerInode {
		t.Errorf("inner netns %s: inode %d (%v), StartNetwork said %d", n.InnerPath, st.Ino, err, n.InnerInode)
	}
	for range 2 {
		if err := finish(); err != nil {
			t.Fatalf("finish: %v", err)
		}
	}
	loaded, err := LoadNetwork(dir)
	if err != nil || loaded.InnerInode != n.InnerInode {
		t.Fatalf("LoadNetwork after finish: %+v, %v", loaded, err)
	}
	checkNoTables(t, n.InnerPath)
	readOK(t, n.InnerPath, listenIn(t, n.InnerPath, "127.0.0.1:0").Addr().String())
	checkUnreachable(t, n.InnerPath)
	if err := TeardownNetwork(dir); err != nil {
		t.Errorf("TeardownNetwork: %v", err)
	}
	checkClean(t, before, snapshot(t, "", allocDir))
}

func TestNetworkSharedOuter(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, outer, allocDir)
	// Registered first, so it runs after both sandboxes' teardowns.
	t.Cleanup(func() { checkClean(t, before, snapshot(t, outer, allocDir)) })
	a := mustSetup(t, egressSpec(t, outer, allocDir))
	// Sandbox b has no queue: TCP is logged and refused like the rest.
	specB := egressSpec(t, outer, allocDir)
	specB.NFQueue = 0
	b := mustSetup(t, specB)
	checkRuleCounts(t, b.InnerPath, InnerTable, map[string]int{"output": 7, "input": 3})
	listenNFQueue(t, a.InnerPath, 100)
	if a.OuterAddr.Masked() == b.OuterAddr.Masked() || a.VethOuter == b.VethOuter || a.Table == b.Table {
		t.Fatalf("sandboxes share pieces: %+v and %+v", a, b)
	}
	if got := b.OuterAddr.String(); got != "10.200.0.5/30" {
		t.Errorf("second sandbox outer address %s, want 10.200.0.5/30", got)
	}
	listenIn(t, outer, a.Proxy.String())
	listenIn(t, outer, b.Proxy.String())
	readOK(t, a.InnerPath, a.Proxy.String())
	readOK(t, b.InnerPath, b.Proxy.String())
	// Sandbox a cannot reach b's proxy address: it is not its own.
	refusedFast(t, a.InnerPath, b.Proxy.String(), unix.ECONNREFUSED)
	log := listenNFLog(t, b.InnerPath, 100)
	refusedFast(t, b.InnerPath, a.Proxy.String(), unix.ECONNREFUSED)
	if logged := log.logged(t); !logged[a.Proxy.Addr()] {
		t.Errorf("no NFLOG message for the refused SYN to %v (logged: %v)", a.Proxy.Addr(), logged)
	}
}

// TestQueueExprRemembered: a setup that finds which queue expression the
// kernel has (nftables' own or the xtables NFQUEUE target) records it in
// KernelDir, and a setup that starts from the wrong record still queues
// new connections and corrects the record.
func TestQueueExprRemembered(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	kernelDir := t.TempDir()
	memo := filepath.Join(kernelDir, xtQueueMemo)
	spec := egressSpec(t, outer, allocDir)
	spec.KernelDir = kernelDir
	mustSetup(t, spec)
	_, err := os.Stat(memo)
	xt := err == nil
	t.Logf("this kernel queues with %s", queueExprName(xt))

	// The wrong record: the next setup starts with the other expression.
	if xt {
		if err := os.Remove(memo); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(memo, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	spec = egressSpec(t, outer, allocDir)
	spec.KernelDir = kernelDir
	n := mustSetup(t, spec)
	if _, err := os.Stat(memo); (err == nil) != xt {
		t.Errorf("after a setup from the wrong record, %s exists: %v, want %v", memo, err == nil, xt)
	}
	listenIn(t, outer, n.Proxy.String())
	queue := listenNFQueue(t, n.InnerPath, spec.NFQueue)
	refusedFast(t, n.InnerPath, "192.0.2.1:80", unix.ECONNREFUSED)
	if !queue.queued()[netip.MustParseAddrPort("192.0.2.1:80")] {
		t.Errorf("no queued SYN to 192.0.2.1:80 (queued: %v)", queue.queued())
	}
}
