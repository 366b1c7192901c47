package bypass

import (
	"fmt"
	"net/netip"
	"strconv"
)

// IP protocol numbers.
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoDCCP     = 33
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoICMPv6   = 58
	protoDstOpts  = 60
	protoSCTP     = 132
	protoUDPLite  = 136
	maxExtHeaders = 16
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// parseIP fills in the protocol, addresses and ports of ev from the start
// of an IPv4 or IPv6 packet. A truncated transport header leaves the
// ports zero; a truncated IP header is an error.
func parseIP(p []byte, ev *Event) error {
	if len(p) == 0 {
		return fmt.Errorf("empty IP packet: %w", errTruncated)
	}
	switch v := p[0] >> 4; v {
	case 4:
		return parseIPv4(p, ev)
	case 6:
		return parseIPv6(p, ev)
	default:
		return fmt.Errorf("IP version %d in NFLOG payload", v)
	}
}

func parseIPv4(p []byte, ev *Event) error {
	if len(p) < ipv4HeaderLen {
		return fmt.Errorf("IPv4 header of %d bytes: %w", len(p), errTruncated)
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < ipv4HeaderLen {
		return fmt.Errorf("IPv4 header length %d", ihl)
	}
	proto := p[9]
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	var sport, dport uint16
	firstFragment := be.Uint16(p[6:8])&0x1fff == 0
	if firstFragment && ihl <= len(p) {
		sport, dport = ports(proto, p[ihl:])
		ev.EchoID, ev.Echo = echoRequest(proto, p[ihl:])
	}
	fill(ev, proto, src, dst, sport, dport)
	return nil
}

func parseIPv6(p []byte, ev *Event) error {
	if len(p) < ipv6HeaderLen {
		return fmt.Errorf("IPv6 header of %d bytes: %w", len(p), errTruncated)
	}
	src := netip.AddrFrom16([16]byte(p[8:24]))
	dst := netip.AddrFrom16([16]byte(p[24:40]))
	next, rest := p[6], p[ipv6HeaderLen:]
	complete := true // the transport header starts at rest
walk:
	for range maxExtHeaders {
		var hl int
		switch next {
		case protoHopByHop, protoRouting, protoDstOpts:
			if len(rest) < 2 {
				complete = false
				break walk
			}
			hl = (int(rest[1]) + 1) * 8
		case protoAH:
			if len(rest) < 2 {
				complete = false
				break walk
			}
			hl = (int(rest[1]) + 2) * 4
		case protoFragment:
			if len(rest) < 8 {
				complete = false
				break walk
			}
			if be.Uint16(rest[2:4])&^7 != 0 { // not the first fragment
				complete = false
			}
			hl = 8
		default:
			break walk
		}
		if hl > len(rest) {
			complete = false
			break
		}
		next, rest = rest[0], rest[hl:]
		if !complete {
			break
		}
	}
	var sport, dport uint16
	if complete {
		sport, dport = ports(next, rest)
		ev.EchoID, ev.Echo = echoRequest(next, rest)
	}
	fill(ev, next, src, dst, sport, dport)
	return nil
}

// ports reads the source and destination ports of the transport
// protocols that start with them.
func ports(proto uint8, l4 []byte) (src, dst uint16) {
	switch proto {
	case protoTCP, protoUDP, protoDCCP, protoSCTP, protoUDPLite:
		if len(l4) >= 4 {
			return be.Uint16(l4), be.Uint16(l4[2:])
		}
	}
	return 0, 0
}

// echoRequest reads the identifier of an ICMP or ICMPv6 echo request.
func echoRequest(proto uint8, l4 []byte) (id uint16, ok bool) {
	if len(l4) < 8 || !(proto == protoICMP && l4[0] == 8 || proto == protoICMPv6 && l4[0] == 128) {
		return 0, false
	}
	return be.Uint16(l4[4:]), true
}

func fill(ev *Event, proto uint8, src, dst netip.Addr, sport, dport uint16) {
	ev.Protocol = protocolName(proto)
	ev.Src = netip.AddrPortFrom(src, sport)
	ev.Dst = netip.AddrPortFrom(dst, dport)
}

func protocolName(p uint8) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	case protoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}
