package bypass

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// queueBody is an NFQNL_MSG_PACKET body: nfgenmsg for family and queue 9,
// then attrs.
func queueBody(family byte, attrs ...[]byte) []byte {
	b := []byte{family, 0, 0, 9}
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// packetHdr is an NFQA_PACKET_HDR: packet id, hw_protocol, hook (packed).
func packetHdr(id uint32) []byte {
	return append(be32(id), 0x08, 0x00, 3)
}

// queuedV4 is a complete kernel-like message: a TCP SYN from uid 1000,
// packet id 77, with the attributes the kernel adds around the payload.
func queuedV4() []byte {
	return nlmsg(msgQueuePacket, 0, 0, queueBody(2,
		attr(qAttrPacketHdr, packetHdr(77)),
		attr(qAttrMark, be32(0)),
		attr(6, be32(2)), // NFQA_IFINDEX_OUTDEV
		attr(qAttrPayload, ipv4Packet(protoTCP, "10.200.0.2", "192.0.2.1", 0x4000, 0, tcpHeader(40000, 443))),
		attr(14, be32(0)), // NFQA_SKB_INFO
		attr(qAttrUID, be32(1000)),
		attr(qAttrGID, be32(1001)),
	))
}

func TestParseQueuePacket(t *testing.T) {
	msgs, err := splitMessages(queuedV4())
	if err != nil || len(msgs) != 1 || msgs[0].typ != msgQueuePacket {
		t.Fatalf("splitMessages: %+v, %v", msgs, err)
	}
	now := time.Unix(42, 0)
	p, err := parseQueuePacket(msgs[0].data, now)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		Time:     now,
		Protocol: "tcp",
		Src:      netip.MustParseAddrPort("10.200.0.2:40000"),
		Dst:      netip.MustParseAddrPort("192.0.2.1:443"),
		UID:      1000,
		GID:      1001,
	}
	if p.Event != want || p.id != 77 || !p.hasID {
		t.Errorf("got %+v id %d (%v)\nwant %+v id 77", p.Event, p.id, p.hasID, want)
	}

	// IPv6, a kernel timestamp, no socket owner.
	body := queueBody(10,
		attr(qAttrPacketHdr, packetHdr(1<<31)),
		attr(qAttrTimestamp, timestamp(1700000000, 5)),
		attr(qAttrPayload, ipv6Packet(protoTCP, "fd00::2", "2001:db8::1", tcpHeader(5, 80))))
	p, err = parseQueuePacket(body, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.id != 1<<31 || p.UID != -1 || p.GID != -1 || !p.Time.Equal(time.Unix(1700000000, 5000)) ||
		p.Dst != netip.MustParseAddrPort("[2001:db8::1]:80") || p.Src != netip.MustParseAddrPort("[fd00::2]:5") {
		t.Errorf("v6: %+v id %d", p.Event, p.id)
	}
}

func TestParseQueueErrors(t *testing.T) {
	v4 := ipv4Packet(protoTCP, "10.0.0.2", "1.1.1.1", 0, 0, tcpHeader(1, 2))
	for _, tc := range []struct {
		name, want string
		body       []byte
		hasID      bool
	}{
		{"short nfgenmsg", "nfgenmsg", []byte{2, 0}, false},
		{"no header", "NFQA_PACKET_HDR", queueBody(2, attr(qAttrPayload, v4)), false},
		{"short header", "attribute 1", queueBody(2, attr(qAttrPacketHdr, []byte{0, 0, 1}), attr(qAttrPayload, v4)), false},
		{"no payload", "NFQA_PAYLOAD", queueBody(2, attr(qAttrPacketHdr, packetHdr(3))), true},
		{"short uid", "attribute 16", queueBody(2, attr(qAttrPacketHdr, packetHdr(3)), attr(qAttrUID, []byte{1})), true},
		{"bad timestamp", "NFQA_TIMESTAMP", queueBody(2, attr(qAttrPacketHdr, packetHdr(3)), attr(qAttrTimestamp, timestamp(1, 2e6))), true},
		{"bad payload", "IP version 5", queueBody(2, attr(qAttrPacketHdr, packetHdr(3)), attr(qAttrPayload, []byte{0x50})), true},
		{"attr overruns", "attribute 10", append(queueBody(2, attr(qAttrPacketHdr, packetHdr(3))), 0xff, 0, qAttrPayload, 0), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseQueuePacket(tc.body, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one mentioning %q", err, tc.want)
			}
			// A packet whose id was read still gets its verdict.
			if p.hasID != tc.hasID || (tc.hasID && p.id != 3) {
				t.Errorf("id %d (present %v), want present %v", p.id, p.hasID, tc.hasID)
			}
		})
	}
}

// requestAttrs checks the header of a request built for queue 0x1234 and
// returns its attributes.
func requestAttrs(t *testing.T, b []byte, typ, flags uint16, seq uint32) map[uint16][]byte {
	t.Helper()
	msgs, err := splitMessages(b)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("splitMessages: %v, %d messages", err, len(msgs))
	}
	m := msgs[0]
	if int(ne.Uint32(b)) != len(b) || m.typ != typ || m.flags != flags || m.seq != seq {
		t.Fatalf("header: len %d/%d type %#x flags %#x seq %d", ne.Uint32(b), len(b), m.typ, m.flags, m.seq)
	}
	if !bytes.Equal(m.data[:4], []byte{0, 0, 0x12, 0x34}) {
		t.Fatalf("nfgenmsg %x, want family 0, version 0, queue 0x1234 big-endian", m.data[:4])
	}
	got := map[uint16][]byte{}
	if err := walkAttrs(m.data[4:], func(typ uint16, v []byte) error { got[typ] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func checkAttrs(t *testing.T, got, want map[uint16][]byte) {
	t.Helper()
	for typ, v := range want {
		if !bytes.Equal(got[typ], v) {
			t.Errorf("attribute %d = %x, want %x", typ, got[typ], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("attributes %v, want exactly %v", got, want)
	}
}

func TestQueueBindRequest(t *testing.T) {
	got := requestAttrs(t, queueBindRequest(0x1234, 5, 128, 1024), msgQueueConfig, nlmFRequest|nlmFAck, 5)
	checkAttrs(t, got, map[uint16][]byte{
		qCfgAttrCmd:    {qCfgCmdBind, 0, 0, 0},
		qCfgAttrParams: {0, 0, 0, 128, qCopyPacket},
		qCfgAttrMaxLen: {0, 0, 4, 0},
		qCfgAttrMask:   {0, 0, 0, qFlagFailOpen | qFlagUIDGID},
		qCfgAttrFlags:  {0, 0, 0, qFlagUIDGID},
	})
	if got[qCfgAttrFlags][3]&qFlagFailOpen != 0 {
		t.Error("the queue is fail-open")
	}
}

func TestVerdictRequest(t *testing.T) {
	got := requestAttrs(t, verdictRequest(0x1234, 9, 0xdeadbeef, verdictRepeat, RejectMark), msgQueueVerdict, nlmFRequest, 9)
	checkAttrs(t, got, map[uint16][]byte{
		qAttrVerdictHdr: {0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef},
		qAttrMark:       []byte("moat"),
	})
}

// TestQueueTruncations parses every prefix of valid messages: errors are
// fine, panics and events without addresses are not.
func TestQueueTruncations(t *testing.T) {
	for i := range len(queuedV4()) + 1 {
		checkQueueParse(t, queuedV4()[:i])
	}
}

func checkQueueParse(t *testing.T, b []byte) {
	t.Helper()
	msgs, _ := splitMessages(b)
	for _, m := range msgs {
		p, err := parseQueuePacket(m.data, time.Now())
		if err == nil && (!p.hasID || !p.Dst.Addr().IsValid() || p.Protocol == "") {
			t.Fatalf("parse of %x succeeded without an id or addresses: %+v", b, p)
		}
	}
	if p, err := parseQueuePacket(b, time.Now()); err == nil && !p.Src.Addr().IsValid() {
		t.Fatalf("parse of %x succeeded without addresses: %+v", b, p)
	}
}

func FuzzParseQueue(f *testing.F) {
	f.Add(queuedV4())
	f.Add(queueBody(10, attr(qAttrPacketHdr, packetHdr(1)),
		attr(qAttrPayload, ipv6Packet(protoHopByHop, "fd00::2", "2001:db8::1", append(extHeader(protoTCP, 1), tcpHeader(1, 443)...)))))
	f.Add(queueBindRequest(1, 1, 128, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkQueueParse(t, b)
	})
}
