package hooks

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vethInnerName is the veth's name inside the inner netns.
const vethInnerName = "eth0"

// defaultMTU is the MTU used when the outer netns has no default route.
const defaultMTU = 1500

// sandboxID is a short name for the sandbox in dir, unique per state
// directory: the veth is "moat"+ID and the outer table "moat_"+ID.
func sandboxID(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return hex.EncodeToString(sum[:4])
}

// outerMTU is the MTU of the link of the outer netns's IPv4 default route
// (the one with the lowest metric), else defaultMTU.
func outerMTU(c *nsConn) (int, error) {
	routes, err := c.rt.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{}, netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return 0, fmt.Errorf("list default routes: %w", err)
	}
	best := -1
	for i, r := range routes {
		if r.LinkIndex > 0 && (best < 0 || r.Priority < routes[best].Priority) {
			best = i
		}
	}
	if best < 0 {
		return defaultMTU, nil
	}
	link, err := c.rt.LinkByIndex(routes[best].LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("default route link: %w", err)
	}
	if mtu := link.Attrs().MTU; mtu > 0 {
		return mtu, nil
	}
	return defaultMTU, nil
}

// loopbackUp sets lo up.
func loopbackUp(c *nsConn) error {
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loopbackIndex, Name: "lo"}}
	if err := c.rt.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set loopback up: %w", err)
	}
	return nil
}

// loopbackRoute6 adds an IPv6 default route through lo to the inner netns
// of a sandbox with egress, whose veth carries IPv4 only. Without a route
// an IPv6 connect fails before netfilter sees it; through lo it reaches
// the inner output chain, which logs it for the bypass monitor and refuses
// it.
func loopbackRoute6(c *nsConn) error {
	r := &netlink.Route{LinkIndex: loopbackIndex, Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}}
	err := c.rt.RouteAdd(r)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return nil // IPv6 is off in this kernel
	}
	if err != nil {
		return fmt.Errorf("default route %v through lo: %w", r.Dst, err)
	}
	return nil
}

// addVeth creates a veth pair whose end name is in the outer netns of c,
// up and with address addr, and whose peer is made directly in the inner
// netns as eth0 (where IPv6 is already off for new interfaces). created
// says whether the pair exists, whatever the error.
func addVeth(c *nsConn, inner *os.File, name string, mtu int, addr netip.Prefix) (created bool, _ error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	attrs.MTU = mtu
	attrs.Flags = net.FlagUp
	veth := netlink.NewVeth(attrs)
	veth.PeerName = vethInnerName
	veth.PeerNamespace = netlink.NsFd(inner.Fd())
	if err := c.rt.LinkAdd(veth); err != nil {
		return false, fmt.Errorf("create veth %s: %w", name, err)
	}
	if err := c.rt.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return true, fmt.Errorf("address veth %s: %w", name, err)
	}
	return true, nil
}

// configureInner gives the inner netns's eth0 its address, sets it up and
// routes everything through gw, the outer end.
func configureInner(c *nsConn, addr netip.Prefix, gw netip.Addr) error {
	link, err := c.rt.LinkByName(vethInnerName)
	if err != nil {
		return fmt.Errorf("find inner veth: %w", err)
	}
	if err := c.rt.AddrAdd(link, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return fmt.Errorf("address inner veth: %w", err)
	}
	if err := c.rt.LinkSetUp(link); err != nil {
		return fmt.Errorf("set inner veth up: %w", err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice(), Family: unix.AF_INET}
	if err := c.rt.RouteAdd(route); err != nil {
		return fmt.Errorf("inner default route via %v: %w", gw, err)
	}
	return nil
}

// deleteLink deletes the link called name; a missing one is fine.
func deleteLink(c *nsConn, name string) error {
	link, err := c.rt.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if err := c.rt.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// ipNet converts a prefix to the form netlink takes, keeping the host bits.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
