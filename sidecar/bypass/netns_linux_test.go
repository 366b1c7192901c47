//go:build linux

package bypass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Helpers for the root tests: a pinned network namespace set up like a
// sandbox's inner one, a sender inside it, and a collector of events.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace, nftables rules and an NFLOG listener")
	}
}

// pinnedNetNS makes a network namespace and pins it on a file in a temp
// dir; cleanup unmounts it (the namespace goes with its last reference).
func pinnedNetNS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(home)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		merr := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(merr, err)
			return // still locked: the runtime discards the thread
		}
		runtime.UnlockOSThread()
		errc <- merr
	}()
	err := <-errc
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			t.Errorf("unmount %s: %v", path, err)
		}
	})
	if err != nil {
		t.Fatalf("new pinned netns: %v", err)
	}
	return path
}

// setupInner gives the namespace a veth pair with addresses and default
// routes, and the output chain of a sandbox's inner namespace: loopback
// accepted, new TCP connections sent to NFQUEUE queue unless it is 0 (and
// rejected when they come back with RejectMark), everything else logged
// to testGroup and rejected. It reports whether IPv6 is configured.
func setupInner(t *testing.T, path string, queue uint16) (ipv6 bool) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in netns: %v", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("lo up: %v", err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mt0"}, PeerName: "mt1"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	var mt0 netlink.Link
	for _, name := range []string{"mt1", "mt0"} {
		if mt0, err = h.LinkByName(name); err == nil {
			err = h.LinkSetUp(mt0)
		}
		if err != nil {
			t.Fatalf("%s up: %v", name, err)
		}
	}
	addr, _ := netlink.ParseAddr("10.99.0.2/24")
	if err := h.AddrAdd(mt0, addr); err != nil {
		t.Fatalf("add address: %v", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: mt0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
		t.Fatalf("add default route: %v", err)
	}
	addr6, _ := netlink.ParseAddr("fd00:99::2/64")
	addr6.Flags = unix.IFA_F_NODAD
	if err := h.AddrAdd(mt0, addr6); err != nil {
		t.Logf("no IPv6 (%v): testing IPv4 only", err)
	} else if err := h.RouteAdd(&netlink.Route{LinkIndex: mt0.Attrs().Index, Gw: net.ParseIP("fd00:99::1"),
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}); err != nil {
		t.Logf("no IPv6 default route (%v): testing IPv4 only", err)
	} else {
		ipv6 = true
	}

	err = addRules(ns, lo.Attrs().Index, queue, false)
	if errors.Is(err, unix.ENOENT) && queue != 0 {
		// No nft_queue in this kernel: the xtables NFQUEUE target.
		err = addRules(ns, lo.Attrs().Index, queue, true)
	}
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	return ipv6
}

// addRules installs the test table of setupInner in ns.
func addRules(ns netns.NsHandle, lo int, queue uint16, xtQueue bool) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "moattest"})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "output", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	rules := [][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyOIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(lo))},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}
	if queue != 0 {
		rules = append(rules, queueRules(queue, xtQueue)...)
	}
	rules = append(rules, []expr.Any{
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: testGroup, Data: []byte(testPrefix)},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
	})
	for _, r := range rules {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: r})
	}
	return c.Flush()
}

// inNetNS runs fn on a thread inside the namespace at path whose fsuid and
// fsgid are testUID and testGID, so sockets fn creates belong to them.
// The thread is never unlocked: the runtime discards it afterwards.
func inNetNS(t *testing.T, path string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// A panic here would skip the test's cleanups (and leave the
		// namespace mounted): turn it into a failure instead.
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic: %v", r)
			}
		}()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err == nil {
			err = unix.Setfsgid(testGID)
		}
		if err == nil {
			err = unix.Setfsuid(testUID)
		}
		if err == nil {
			fn()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("enter netns: %v", err)
	}
}

func sendUDP(dst netip.AddrPort) error {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()})
	if dst.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Sendto(fd, []byte("moat"), 0, sa)
}

// collector runs m.Run in the background and hands out the events.
type collector struct {
	events chan Event
	done   chan error
	cancel context.CancelFunc
}

func collect(t *testing.T, m *Monitor) *collector {
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{events: make(chan Event, 4096), done: make(chan error, 1), cancel: cancel}
	go func() { c.done <- m.Run(ctx, func(ev Event) { c.events <- ev }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-c.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return c
}

// next returns the first event for which match is true, or false after
// wait without one.
func (c *collector) next(wait time.Duration, match func(Event) bool) (Event, bool) {
	timeout := time.After(wait)
	for {
		select {
		case ev := <-c.events:
			if match(ev) {
				return ev, true
			}
		case <-timeout:
			return Event{}, false
		}
	}
}

// waitFor returns the first event for which match is true, and how many
// events came before it.
func (c *collector) waitFor(t *testing.T, what string, match func(Event) bool) (Event, int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for n := 0; ; n++ {
		select {
		case ev := <-c.events:
			if match(ev) {
				return ev, n
			}
		case err := <-c.done:
			t.Fatalf("Run returned before %s: %v", what, err)
		case <-timeout:
			t.Fatalf("no event for %s", what)
		}
	}
}

func openMonitor(t *testing.T, path string) *Monitor {
	t.Helper()
	m, err := Open(path, testGroup)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func waitDone(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func waitRunning(t *testing.T, m *Monitor) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !m.running.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
	}
}
