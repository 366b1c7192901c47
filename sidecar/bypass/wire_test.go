package bypass

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// --- builders for hand-made messages ---

func attr(typ uint16, data []byte) []byte {
	b := make([]byte, align4(nlaHdrLen+len(data)))
	ne.PutUint16(b, uint16(nlaHdrLen+len(data)))
	ne.PutUint16(b[2:], typ)
	copy(b[nlaHdrLen:], data)
	return b
}

func be32(v uint32) []byte { return be.AppendUint32(nil, v) }

func nlmsg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, align4(nlmsgHdrLen+len(body)))
	ne.PutUint32(b, uint32(nlmsgHdrLen+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	copy(b[nlmsgHdrLen:], body)
	return b
}

// packetBody is an NFULNL_MSG_PACKET body: nfgenmsg for family and group 7,
// then attrs.
func packetBody(family byte, attrs ...[]byte) []byte {
	b := []byte{family, 0, 0, 7}
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

func tcpHeader(sport, dport uint16) []byte {
	h := make([]byte, 20)
	be.PutUint16(h, sport)
	be.PutUint16(h[2:], dport)
	h[12] = 5 << 4
	h[13] = 0x02 // SYN
	return h
}

func udpHeader(sport, dport uint16) []byte {
	h := make([]byte, 8)
	be.PutUint16(h, sport)
	be.PutUint16(h[2:], dport)
	be.PutUint16(h[4:], 8)
	return h
}

func ipv4Packet(proto byte, src, dst string, fragOffset uint16, options int, l4 []byte) []byte {
	ihl := 20 + options
	h := make([]byte, ihl, ihl+len(l4))
	h[0] = 0x40 | byte(ihl/4)
	be.PutUint16(h[2:], uint16(ihl+len(l4)))
	be.PutUint16(h[6:], fragOffset)
	h[8] = 64
	h[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, l4...)
}

func ipv6Packet(next byte, src, dst string, rest []byte) []byte {
	h := make([]byte, 40, 40+len(rest))
	h[0] = 0x60
	be.PutUint16(h[4:], uint16(len(rest)))
	h[6] = next
	h[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, rest...)
}

// extHeader is an IPv6 extension header of 8*units bytes.
func extHeader(next byte, units int) []byte {
	h := make([]byte, 8*units)
	h[0] = next
	h[1] = byte(units - 1)
	return h
}

func timestamp(sec, usec uint64) []byte {
	return append(be.AppendUint64(nil, sec), be.AppendUint64(nil, usec)...)
}

// fullV4 is a complete kernel-like message: a TCP SYN from uid 1000.
func fullV4() []byte {
	return nlmsg(msgTypePacket, 0, 0, packetBody(2,
		attr(attrPacketHdr, []byte{0x08, 0x00, 3, 0}),
		attr(attrPrefix, []byte("moat:bypass:\x00")),
		attr(attrUID, be32(1000)),
		attr(attrGID, be32(1001)),
		attr(attrSeq, be32(7)),
		attr(attrTimestamp, timestamp(1700000000, 250000)),
		attr(attrPayload, ipv4Packet(protoTCP, "10.200.0.2", "192.0.2.1", 0x4000, 0, tcpHeader(40000, 80))),
	))
}

func parseOne(t *testing.T, b []byte) record {
	t.Helper()
	var got []record
	if err := parseDatagram(b, time.Unix(42, 0), func(r record) { got = append(got, r) }); err != nil {
		t.Fatalf("parseDatagram: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d records, want 1", len(got))
	}
	return got[0]
}

func TestParseFullIPv4TCP(t *testing.T) {
	r := parseOne(t, fullV4())
	want := Event{
		Time:     time.Unix(1700000000, 250000000),
		Protocol: "tcp",
		Src:      netip.MustParseAddrPort("10.200.0.2:40000"),
		Dst:      netip.MustParseAddrPort("192.0.2.1:80"),
		UID:      1000,
		GID:      1001,
		Prefix:   "moat:bypass:",
	}
	if !r.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", r.Time, want.Time)
	}
	r.Time = want.Time
	if r.Event != want {
		t.Errorf("event %+v\nwant  %+v", r.Event, want)
	}
	if !r.hasSeq || r.seq != 7 {
		t.Errorf("seq %d (present %v), want 7", r.seq, r.hasSeq)
	}
}

func TestParseDefaults(t *testing.T) {
	// No uid/gid (no socket), no timestamp, no prefix: UDP with IPv4 options.
	b := nlmsg(msgTypePacket, 0, 0, packetBody(2,
		attr(attrPayload, ipv4Packet(protoUDP, "10.0.0.2", "192.0.2.1", 0, 8, udpHeader(5353, 53)))))
	r := parseOne(t, b)
	if r.UID != -1 || r.GID != -1 {
		t.Errorf("uid/gid %d/%d, want -1/-1", r.UID, r.GID)
	}
	if !r.Time.Equal(time.Unix(42, 0)) || r.Prefix != "" || r.hasSeq {
		t.Errorf("time %v prefix %q seq %v: want reception time, no prefix, no seq", r.Time, r.Prefix, r.hasSeq)
	}
	if r.Protocol != "udp" || r.Dst != netip.MustParseAddrPort("192.0.2.1:53") || r.Src.Port() != 5353 {
		t.Errorf("got %s %v -> %v", r.Protocol, r.Src, r.Dst)
	}
}

func TestParseIP(t *testing.T) {
	hopUDP := append(extHeader(protoDstOpts, 1), append(extHeader(protoUDP, 2), udpHeader(1234, 53)...)...)
	firstFrag := append([]byte{protoTCP, 0, 0, 0, 0, 0, 0, 1}, tcpHeader(5, 443)...)
	laterFrag := append([]byte{protoTCP, 0, 0x05, 0x00, 0, 0, 0, 1}, tcpHeader(5, 443)...)
	for _, tc := range []struct {
		name, proto, src, dst string
		pkt                   []byte
	}{
		{"v4 icmp", "icmp", "10.0.0.2:0", "1.1.1.1:0", ipv4Packet(protoICMP, "10.0.0.2", "1.1.1.1", 0, 0, []byte{8, 0, 0, 0, 0, 0, 0, 0})},
		{"v4 gre", "47", "10.0.0.2:0", "1.1.1.1:0", ipv4Packet(47, "10.0.0.2", "1.1.1.1", 0, 0, make([]byte, 8))},
		{"v4 sctp", "132", "10.0.0.2:9", "1.1.1.1:10", ipv4Packet(protoSCTP, "10.0.0.2", "1.1.1.1", 0, 0, udpHeader(9, 10))},
		{"v4 later fragment", "udp", "10.0.0.2:0", "1.1.1.1:0", ipv4Packet(protoUDP, "10.0.0.2", "1.1.1.1", 0x0010, 0, udpHeader(1, 2))},
		{"v4 truncated l4", "tcp", "10.0.0.2:0", "1.1.1.1:0", ipv4Packet(protoTCP, "10.0.0.2", "1.1.1.1", 0, 0, []byte{0, 1})},
		{"v4 options past end", "tcp", "10.0.0.2:0", "1.1.1.1:0", ipv4Packet(protoTCP, "10.0.0.2", "1.1.1.1", 0, 40, nil)[:30]},
		{"v6 tcp", "tcp", "[fd00::2]:40000", "[2001:db8::1]:443", ipv6Packet(protoTCP, "fd00::2", "2001:db8::1", tcpHeader(40000, 443))},
		{"v6 icmpv6", "icmpv6", "[fd00::2]:0", "[ff02::2]:0", ipv6Packet(protoICMPv6, "fd00::2", "ff02::2", []byte{133, 0, 0, 0, 0, 0, 0, 0})},
		{"v6 ext headers", "udp", "[fd00::2]:1234", "[2001:db8::1]:53", ipv6Packet(protoHopByHop, "fd00::2", "2001:db8::1", hopUDP)},
		{"v6 first fragment", "tcp", "[fd00::2]:5", "[2001:db8::1]:443", ipv6Packet(protoFragment, "fd00::2", "2001:db8::1", firstFrag)},
		{"v6 later fragment", "tcp", "[fd00::2]:0", "[2001:db8::1]:0", ipv6Packet(protoFragment, "fd00::2", "2001:db8::1", laterFrag)},
		{"v6 truncated ext", "0", "[fd00::2]:0", "[2001:db8::1]:0", ipv6Packet(protoHopByHop, "fd00::2", "2001:db8::1", []byte{protoUDP, 3, 0, 0})},
		{"v6 ah", "udp", "[fd00::2]:1", "[2001:db8::1]:2", ipv6Packet(protoAH, "fd00::2", "2001:db8::1", append([]byte{protoUDP, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, udpHeader(1, 2)...))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ev Event
			if err := parseIP(tc.pkt, &ev); err != nil {
				t.Fatalf("parseIP: %v", err)
			}
			if ev.Protocol != tc.proto || ev.Src.String() != tc.src || ev.Dst.String() != tc.dst {
				t.Errorf("got %s %v -> %v, want %s %s -> %s", ev.Protocol, ev.Src, ev.Dst, tc.proto, tc.src, tc.dst)
			}
		})
	}
}

func TestParseEcho(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
		echo bool
		id   uint16
	}{
		{"v4 echo request", ipv4Packet(protoICMP, "10.0.0.2", "1.1.1.1", 0, 0, []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}), true, 0x1234},
		{"v4 echo reply", ipv4Packet(protoICMP, "10.0.0.2", "1.1.1.1", 0, 0, []byte{0, 0, 0, 0, 0x12, 0x34, 0, 1}), false, 0},
		{"v4 truncated echo", ipv4Packet(protoICMP, "10.0.0.2", "1.1.1.1", 0, 0, []byte{8, 0, 0, 0, 0x12}), false, 0},
		{"v6 echo request", ipv6Packet(protoICMPv6, "fd00::2", "2001:db8::1", []byte{128, 0, 0, 0, 0, 7, 0, 1}), true, 7},
		{"v6 router solicitation", ipv6Packet(protoICMPv6, "fd00::2", "ff02::2", []byte{133, 0, 0, 0, 0, 7, 0, 0}), false, 0},
		{"udp", ipv4Packet(protoUDP, "10.0.0.2", "1.1.1.1", 0, 0, udpHeader(8, 53)), false, 0},
	} {
		var ev Event
		if err := parseIP(tc.pkt, &ev); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ev.Echo != tc.echo || ev.EchoID != tc.id {
			t.Errorf("%s: echo %v id %d, want %v %d", tc.name, ev.Echo, ev.EchoID, tc.echo, tc.id)
		}
	}
}

func TestParseErrors(t *testing.T) {
	v4 := ipv4Packet(protoTCP, "10.0.0.2", "1.1.1.1", 0, 0, tcpHeader(1, 2))
	badIHL := bytes.Clone(v4)
	badIHL[0] = 0x44
	for _, tc := range []struct {
		name, want string
		body       []byte
	}{
		{"short nfgenmsg", "nfgenmsg", []byte{2, 0}},
		{"no payload", "NFULA_PAYLOAD", packetBody(2, attr(attrUID, be32(1)))},
		{"attr overruns", "attribute 9", append(packetBody(2), 0xff, 0, attrPayload, 0)},
		{"attr too short", "attribute", append(packetBody(2), 2, 0, 1, 0)},
		{"trailing bytes", "attribute header", append(packetBody(2, attr(attrPayload, v4)), 1, 2)},
		{"short uid", "attribute 11", packetBody(2, attr(attrUID, []byte{1, 2}), attr(attrPayload, v4))},
		{"short timestamp", "NFULA_TIMESTAMP", packetBody(2, attr(attrTimestamp, make([]byte, 8)), attr(attrPayload, v4))},
		{"timestamp range", "out of range", packetBody(2, attr(attrTimestamp, timestamp(1<<63, 0)), attr(attrPayload, v4))},
		{"usec range", "out of range", packetBody(2, attr(attrTimestamp, timestamp(1, 1e6)), attr(attrPayload, v4))},
		{"empty payload", "empty IP", packetBody(2, attr(attrPayload, nil))},
		{"ip version", "IP version 5", packetBody(2, attr(attrPayload, []byte{0x50, 0}))},
		{"short v4", "IPv4 header", packetBody(2, attr(attrPayload, v4[:19]))},
		{"bad ihl", "IPv4 header length 16", packetBody(2, attr(attrPayload, badIHL))},
		{"short v6", "IPv6 header", packetBody(10, attr(attrPayload, ipv6Packet(protoUDP, "::1", "::2", nil)[:39]))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePacket(tc.body, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSplitMessages(t *testing.T) {
	good := fullV4()
	// A batch as the kernel sends it with a queue threshold above one:
	// packets flagged multi-part, then NLMSG_DONE.
	batch := append(append(bytes.Clone(good), good...), nlmsg(nlmsgDone, 0x2, 0, nil)...)
	var n int
	if err := parseDatagram(batch, time.Now(), func(record) { n++ }); err != nil || n != 2 {
		t.Fatalf("batch: %d records, err %v; want 2, nil", n, err)
	}

	// A malformed packet between good ones is skipped; a broken header
	// ends the datagram.
	bad := nlmsg(msgTypePacket, 0, 0, []byte{2, 0})
	broken := []byte{0xff, 0xff, 0, 0, 0, 0}
	mixed := append(append(append(bytes.Clone(good), bad...), good...), broken...)
	n = 0
	err := parseDatagram(mixed, time.Now(), func(record) { n++ })
	if n != 2 || err == nil || !errors.Is(err, errTruncated) {
		t.Fatalf("mixed: %d records, err %v; want 2 and a truncation error", n, err)
	}

	msgs, err := splitMessages(nlmsg(nlmsgError, 0, 9, []byte{0, 0, 0, 0}))
	if err != nil || len(msgs) != 1 || msgs[0].typ != nlmsgError || msgs[0].seq != 9 || len(msgs[0].data) != 4 {
		t.Fatalf("error message: %+v, %v", msgs, err)
	}
	for _, b := range [][]byte{{1, 2, 3}, make([]byte, 16), append(ne.AppendUint32(nil, 100), make([]byte, 12)...)} {
		if _, err := splitMessages(b); err == nil {
			t.Errorf("splitMessages(%x): no error", b)
		}
	}
}

func TestBindRequest(t *testing.T) {
	b := bindRequest(0x1234, 5, 128)
	msgs, err := splitMessages(b)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("splitMessages: %v, %d messages", err, len(msgs))
	}
	m := msgs[0]
	if int(ne.Uint32(b)) != len(b) || m.typ != msgTypeConfig || m.flags != nlmFRequest|nlmFAck || m.seq != 5 {
		t.Fatalf("header: len %d/%d type %#x flags %#x seq %d", ne.Uint32(b), len(b), m.typ, m.flags, m.seq)
	}
	if !bytes.Equal(m.data[:4], []byte{0, 0, 0x12, 0x34}) {
		t.Fatalf("nfgenmsg %x, want family 0, version 0, group 0x1234 big-endian", m.data[:4])
	}
	got := map[uint16][]byte{}
	if err := walkAttrs(m.data[4:], func(typ uint16, v []byte) error { got[typ] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[uint16][]byte{
		cfgAttrCmd:     {cfgCmdBind},
		cfgAttrMode:    {0, 0, 0, 128, copyModePacket, 0},
		cfgAttrQThresh: {0, 0, 0, 1},
		cfgAttrFlags:   {0, cfgFlagSeq},
	}
	for typ, v := range want {
		if !bytes.Equal(got[typ], v) {
			t.Errorf("attribute %d = %x, want %x", typ, got[typ], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attributes %v, want exactly %v", got, want)
	}
}

// TestTruncations parses every prefix of valid messages: errors are fine,
// panics and invalid addresses are not.
func TestTruncations(t *testing.T) {
	v6 := nlmsg(msgTypePacket, 0, 0, packetBody(10, attr(attrUID, be32(5)),
		attr(attrPayload, ipv6Packet(protoHopByHop, "fd00::2", "2001:db8::1",
			append(extHeader(protoFragment, 1), append([]byte{protoUDP, 0, 0, 0, 0, 0, 0, 1}, udpHeader(1, 53)...)...)))))
	for _, msg := range [][]byte{fullV4(), v6} {
		for i := range len(msg) + 1 {
			checkParse(t, msg[:i])
			// Also with the netlink length claiming the full message.
			if i >= nlmsgHdrLen {
				c := bytes.Clone(msg[:i])
				ne.PutUint32(c, uint32(len(msg)))
				checkParse(t, c)
			}
		}
	}
}

func checkParse(t *testing.T, b []byte) {
	t.Helper()
	_ = parseDatagram(b, time.Now(), func(r record) {
		if !r.Src.Addr().IsValid() || !r.Dst.Addr().IsValid() || r.Protocol == "" {
			t.Fatalf("record without addresses from %x: %+v", b, r)
		}
	})
	var ev Event
	if parseIP(b, &ev) == nil && (!ev.Dst.Addr().IsValid() || ev.Protocol == "") {
		t.Fatalf("parseIP(%x) succeeded without addresses: %+v", b, ev)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(fullV4())
	f.Add(nlmsg(msgTypePacket, 0, 0, packetBody(10, attr(attrPayload,
		ipv6Packet(protoHopByHop, "fd00::2", "2001:db8::1", append(extHeader(protoUDP, 1), udpHeader(1, 53)...))))))
	f.Add(ipv4Packet(protoUDP, "10.0.0.2", "192.0.2.1", 0, 4, udpHeader(1, 53)))
	f.Add(bindRequest(1, 1, 128))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkParse(t, b)
		// The same bytes as an attribute stream and as a packet body.
		_, _ = parsePacket(b, time.Now())
		_ = walkAttrs(b, func(uint16, []byte) error { return nil })
	})
}
