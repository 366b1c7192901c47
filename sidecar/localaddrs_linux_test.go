package sidecar

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLocalAddrsFollowChanges checks that the SSRF guard's list of local
// addresses picks up an address added after the sidecar started, and
// drops one removed, without a listing per connection in between.
func TestLocalAddrsFollowChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and a veth pair")
	}
	errc := make(chan error, 1)
	go func() {
		// The thread stays in its own netns and is never unlocked: the
		// runtime discards it, and the netns goes with the last socket.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- followChanges(t)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func followChanges(t *testing.T) error {
	l, err := watchLocalAddrs(slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer l.Close()
	if got := l.Addrs(); len(got) != 0 {
		t.Errorf("fresh netns: addresses %v, want none", got)
	}
	// A veth pair: the test kernel has no dummy links.
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "moattest0"}, PeerName: "moattest1"}
	if err := netlink.LinkAdd(link); err != nil {
		return err
	}
	addr := netip.MustParseAddr("192.0.2.7")
	nlAddr := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(link, nlAddr); err != nil {
		return err
	}
	if !eventually(func() bool { return slices.Contains(l.Addrs(), addr) }) {
		t.Errorf("after adding %v: addresses %v", addr, l.Addrs())
	}
	if err := netlink.AddrDel(link, nlAddr); err != nil {
		return err
	}
	if !eventually(func() bool { return !slices.Contains(l.Addrs(), addr) }) {
		t.Errorf("after removing %v: addresses %v", addr, l.Addrs())
	}
	// Unchanged addresses are not listed again.
	l.Addrs()
	if l.stale.Load() {
		t.Error("the list is stale with no change announced")
	}
	return nil
}

// eventually polls cond for up to two seconds: the kernel's announcement
// reaches the watcher asynchronously.
func eventually(cond func() bool) bool {
	for range 200 {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}
