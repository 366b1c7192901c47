package ssrf

import "net/netip"

// Kinds of non-public address, as Classify names them.
const (
	KindUnspecified = "unspecified"
	KindLoopback    = "loopback"
	KindLinkLocal   = "link-local"
	KindMulticast   = "multicast"
	KindBroadcast   = "broadcast"
	KindPrivate     = "private"
	KindCGNAT       = "shared address space (CGNAT)"
	KindProtocol    = "IETF protocol assignments"
	KindBenchmark   = "benchmarking"
	KindReserved    = "reserved"
	KindSiteLocal   = "site-local"
	KindUniqueLocal = "unique local"
	KindLocalNAT64  = "local-use NAT64"
)

// span is one special-purpose range. always marks ranges that stay blocked
// even inside an allowed_ips list.
type span struct {
	prefix netip.Prefix
	kind   string
	always bool
}

func mustSpan(cidr, kind string, always bool) span {
	return span{netip.MustParsePrefix(cidr), kind, always}
}

// v4Spans are checked in order; the first match wins, so the broadcast
// address comes before the reserved block that holds it.
var v4Spans = []span{
	mustSpan("0.0.0.0/8", KindUnspecified, true),
	mustSpan("127.0.0.0/8", KindLoopback, true),
	mustSpan("169.254.0.0/16", KindLinkLocal, true), // cloud metadata lives here
	mustSpan("224.0.0.0/4", KindMulticast, true),
	mustSpan("255.255.255.255/32", KindBroadcast, true),
	mustSpan("10.0.0.0/8", KindPrivate, false),
	mustSpan("172.16.0.0/12", KindPrivate, false),
	mustSpan("192.168.0.0/16", KindPrivate, false),
	mustSpan("100.64.0.0/10", KindCGNAT, false),
	mustSpan("192.0.0.0/24", KindProtocol, false),
	mustSpan("198.18.0.0/15", KindBenchmark, false),
	mustSpan("240.0.0.0/4", KindReserved, false),
}

var v6Spans = []span{
	mustSpan("::/128", KindUnspecified, true),
	mustSpan("::1/128", KindLoopback, true),
	mustSpan("fe80::/10", KindLinkLocal, true),
	mustSpan("ff00::/8", KindMulticast, true),
	mustSpan("fec0::/10", KindSiteLocal, false),
	mustSpan("fc00::/7", KindUniqueLocal, false),
	mustSpan("64:ff9b:1::/48", KindLocalNAT64, false),
}

// IPv6 forms that carry an IPv4 address.
var (
	compat4   = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible
	siit4     = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (SIIT)
	nat64     = netip.MustParsePrefix("64:ff9b::/96")    // well-known NAT64 prefix
	sixToFour = netip.MustParsePrefix("2002::/16")       // 6to4: bits 16-47
	teredo    = netip.MustParsePrefix("2001::/32")       // client: inverted last 32 bits
)

// Classify names the special-purpose range a holds ("" for a public
// address) and reports whether that range stays blocked even when an
// allowed_ips list covers it (loopback, link-local, unspecified,
// multicast, broadcast). IPv6 forms that embed an IPv4 address
// (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4, Teredo) are classified
// by the embedded address.
func Classify(a netip.Addr) (kind string, always bool) {
	a = a.WithZone("")
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.Is4() {
		return classify(v4Spans, a)
	}
	if kind, always := classify(v6Spans, a); kind != "" {
		return kind, always
	}
	if v4, ok := Embedded(a); ok {
		return classify(v4Spans, v4)
	}
	return "", false
}

func classify(spans []span, a netip.Addr) (string, bool) {
	for _, s := range spans {
		if s.prefix.Contains(a) {
			return s.kind, s.always
		}
	}
	return "", false
}

// Embedded returns the IPv4 address an IPv6 address carries, for the
// forms that route to one: IPv4-mapped and IPv4-compatible, SIIT, NAT64
// (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32, whose client
// address is the last 32 bits inverted).
func Embedded(a netip.Addr) (netip.Addr, bool) {
	if a.Is4() {
		return netip.Addr{}, false
	}
	a = a.WithZone("")
	b := a.As16()
	last := func(invert bool) netip.Addr {
		var v [4]byte
		copy(v[:], b[12:])
		if invert {
			for i := range v {
				v[i] ^= 0xff
			}
		}
		return netip.AddrFrom4(v)
	}
	switch {
	case a.Is4In6(), compat4.Contains(a), siit4.Contains(a), nat64.Contains(a):
		return last(false), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case teredo.Contains(a):
		return last(true), true
	}
	return netip.Addr{}, false
}
