package hooks

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// TestNetworkOuterGuards plays an agent holding CAP_NET_ADMIN that deletes
// the inner rules: the outer netns, forwarding on and with a route to an
// upstream netns, still lets it reach nothing but the proxy. Deleting the
// outer table at the end shows the upstream was reachable without it.
func TestNetworkOuterGuards(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	upstream := newOuterNetNS(t)
	connectUpstream(t, outer, upstream)
	n := mustSetup(t, egressSpec(t, outer, filepath.Join(t.TempDir(), "alloc")))
	if n.MTU != upstreamMTU {
		t.Errorf("MTU %d, want the outer default route's %d", n.MTU, upstreamMTU)
	}
	checkInnerLinks(t, n)

	listenIn(t, outer, n.Proxy.String())
	listenIn(t, outer, "0.0.0.0:2222")
	listenIn(t, upstream, "0.0.0.0:80")
	deleteInnerTable(t, n.InnerPath)

	readOK(t, n.InnerPath, n.Proxy.String())
	droppedFrom(t, n.InnerPath, net.JoinHostPort(n.OuterAddr.Addr().String(), "2222"))
	droppedFrom(t, n.InnerPath, "198.51.100.2:80")

	inNS(t, outer, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: n.Table, Family: nftables.TableFamilyINet})
		return c.Flush()
	})
	readOK(t, n.InnerPath, "198.51.100.2:80")
}

// upstreamMTU is the MTU of the outer netns's default route link in
// TestNetworkOuterGuards, which the sandbox's veth must take.
const upstreamMTU = 1400

// connectUpstream links the outer netns to an upstream one
// (198.51.100.1/24 and .2/24, the outer netns's default route), routes the
// sandbox pool back through the outer netns and turns forwarding on there.
func connectUpstream(t *testing.T, outer, upstream string) {
	up, err := openNetNS(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	inNS(t, outer, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "zup0", TxQLen: -1, Flags: net.FlagUp, MTU: upstreamMTU},
			PeerName: "eth0", PeerTxQLen: -1, PeerNamespace: netlink.NsFd(up.Fd())}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("198.51.100.1/24")
		if err := netlink.AddrAdd(veth, addr); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Gw: net.ParseIP("198.51.100.2")}); err != nil {
			return err
		}
		return writeSysctl("net/ipv4/ip_forward", "1")
	})
	inNS(t, upstream, func() error {
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("198.51.100.2/24")
		if err := netlink.AddrAdd(eth, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth); err != nil {
			return err
		}
		_, pool, _ := net.ParseCIDR(testPool.String())
		return netlink.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: pool, Gw: net.ParseIP("198.51.100.1")})
	})
}
