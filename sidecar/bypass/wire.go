package bypass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// Event is one packet the inner network namespace refused and logged.
type Event struct {
	// Time is the kernel's timestamp of the packet when it reported one,
	// else the time the monitor read the message.
	Time time.Time
	// Protocol is "tcp", "udp", "icmp", "icmpv6", or the IP protocol
	// number as decimal text.
	Protocol string
	// Src and Dst are the packet's addresses; the ports are those of TCP,
	// UDP, UDP-Lite, SCTP and DCCP, and zero for everything else (ICMP) and
	// for non-first fragments.
	Src, Dst netip.AddrPort
	// UID and GID are the owner of the sending socket (its creator's
	// fsuid and fsgid, in the monitor's user namespace) as the kernel
	// reported them, or -1 when the packet had no socket
	// (kernel-generated traffic such as ICMP errors or neighbour
	// discovery).
	UID, GID int
	// Prefix is the log prefix of the rule that logged the packet, if any.
	Prefix string
	// Echo is set for an ICMP or ICMPv6 echo request (a ping), and EchoID
	// is its identifier: a ping socket's "port", by which its sender can
	// be found.
	Echo   bool
	EchoID uint16
}

// Netlink framing (include/uapi/linux/netlink.h). Netlink headers and
// attribute headers are in host byte order.
const (
	nlmsgHdrLen = 16
	nlmsgError  = 2
	nlmsgDone   = 3

	nlmFRequest = 0x1
	nlmFAck     = 0x4

	nlaHdrLen   = 4
	nlaTypeMask = 0x3fff // without NLA_F_NESTED and NLA_F_NET_BYTEORDER
)

// nfnetlink_log (include/uapi/linux/netfilter/nfnetlink_log.h). Attribute
// payloads are in network byte order.
const (
	nfgenHdrLen   = 4
	subsysULOG    = 4
	msgTypePacket = subsysULOG<<8 | 0 // NFULNL_MSG_PACKET
	msgTypeConfig = subsysULOG<<8 | 1 // NFULNL_MSG_CONFIG

	attrPacketHdr = 1  // NFULA_PACKET_HDR: be16 hw_protocol, u8 hook, pad
	attrTimestamp = 3  // NFULA_TIMESTAMP: be64 sec, be64 usec
	attrPayload   = 9  // NFULA_PAYLOAD
	attrPrefix    = 10 // NFULA_PREFIX: NUL-terminated
	attrUID       = 11 // NFULA_UID: be32
	attrSeq       = 12 // NFULA_SEQ: be32, per instance
	attrGID       = 14 // NFULA_GID: be32

	cfgAttrCmd     = 1 // NFULA_CFG_CMD: u8 command
	cfgAttrMode    = 2 // NFULA_CFG_MODE: be32 copy_range, u8 copy_mode, pad (packed, 6 bytes)
	cfgAttrQThresh = 5 // NFULA_CFG_QTHRESH: be32
	cfgAttrFlags   = 6 // NFULA_CFG_FLAGS: be16

	cfgCmdBind     = 1 // NFULNL_CFG_CMD_BIND
	copyModePacket = 2 // NFULNL_COPY_PACKET
	cfgFlagSeq     = 0x0001

	timestampBytes = 16
)

var (
	ne = binary.NativeEndian
	be = binary.BigEndian

	errTruncated = errors.New("truncated")
)

func align4(n int) int { return (n + 3) &^ 3 }

// nlAttr is one attribute of an outgoing message.
type nlAttr struct {
	typ  uint16
	data []byte
}

// buildConfig makes an NFULNL_MSG_CONFIG request for group, asking for an
// acknowledgement.
func buildConfig(group uint16, seq uint32, family uint8, attrs ...nlAttr) []byte {
	return buildRequest(msgTypeConfig, nlmFRequest|nlmFAck, seq, family, group, attrs...)
}

// buildRequest makes an nfnetlink request: the netlink header, nfgenmsg
// (family, version 0, resource id: the NFLOG group or NFQUEUE number) and
// the attributes. The port id stays zero: the kernel fills in the
// sender's.
func buildRequest(typ, flags uint16, seq uint32, family uint8, resID uint16, attrs ...nlAttr) []byte {
	size := nlmsgHdrLen + nfgenHdrLen
	for _, a := range attrs {
		size += align4(nlaHdrLen + len(a.data))
	}
	b := make([]byte, size)
	ne.PutUint32(b[0:], uint32(size))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b[16] = family
	b[17] = 0 // NFNETLINK_V0
	be.PutUint16(b[18:], resID)
	off := nlmsgHdrLen + nfgenHdrLen
	for _, a := range attrs {
		ne.PutUint16(b[off:], uint16(nlaHdrLen+len(a.data)))
		ne.PutUint16(b[off+2:], a.typ)
		copy(b[off+nlaHdrLen:], a.data)
		off += align4(nlaHdrLen + len(a.data))
	}
	return b
}

// bindRequest binds group to the sending socket in one message: the bind
// command, packet copy mode with copyRange bytes, a queue threshold of one
// (each packet is sent at once instead of being batched for up to a
// second) and per-instance sequence numbers (to count lost messages).
// The kernel applies the command before the other attributes.
func bindRequest(group uint16, seq uint32, copyRange uint32) []byte {
	mode := make([]byte, 6)
	be.PutUint32(mode, copyRange)
	mode[4] = copyModePacket
	return buildConfig(group, seq, 0,
		nlAttr{cfgAttrCmd, []byte{cfgCmdBind}},
		nlAttr{cfgAttrMode, mode},
		nlAttr{cfgAttrQThresh, be.AppendUint32(nil, 1)},
		nlAttr{cfgAttrFlags, be.AppendUint16(nil, cfgFlagSeq)},
	)
}

// nlMessage is one netlink message cut out of a datagram.
type nlMessage struct {
	typ, flags uint16
	seq, pid   uint32
	data       []byte // after the netlink header
}

// splitMessages cuts a netlink datagram into messages. On a malformed
// header it returns the messages before it and an error.
func splitMessages(b []byte) ([]nlMessage, error) {
	var out []nlMessage
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("netlink header with %d bytes left: %w", len(b), errTruncated)
		}
		l := ne.Uint32(b)
		if l < nlmsgHdrLen || uint64(l) > uint64(len(b)) {
			return out, fmt.Errorf("netlink message length %d with %d bytes left: %w", l, len(b), errTruncated)
		}
		out = append(out, nlMessage{
			typ:   ne.Uint16(b[4:]),
			flags: ne.Uint16(b[6:]),
			seq:   ne.Uint32(b[8:]),
			pid:   ne.Uint32(b[12:]),
			data:  b[nlmsgHdrLen:l],
		})
		next := align4(int(l))
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return out, nil
}

// walkAttrs calls fn for each netlink attribute in b.
func walkAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			return fmt.Errorf("attribute header with %d bytes left: %w", len(b), errTruncated)
		}
		l := int(ne.Uint16(b))
		typ := ne.Uint16(b[2:]) & nlaTypeMask
		if l < nlaHdrLen || l > len(b) {
			return fmt.Errorf("attribute %d of length %d with %d bytes left: %w", typ, l, len(b), errTruncated)
		}
		if err := fn(typ, b[nlaHdrLen:l]); err != nil {
			return err
		}
		next := align4(l)
		if next >= len(b) {
			return nil
		}
		b = b[next:]
	}
	return nil
}

// record is a parsed NFULNL_MSG_PACKET: the event plus the bookkeeping
// the monitor uses to count lost messages.
type record struct {
	Event
	seq    uint32
	hasSeq bool
}

// parsePacket parses the body of an NFULNL_MSG_PACKET message (nfgenmsg
// and attributes); now is used when the kernel sent no timestamp.
func parsePacket(data []byte, now time.Time) (record, error) {
	r := record{Event: Event{Time: now, UID: -1, GID: -1}}
	if len(data) < nfgenHdrLen {
		return r, fmt.Errorf("nfgenmsg of %d bytes: %w", len(data), errTruncated)
	}
	var payload []byte
	havePayload := false
	err := walkAttrs(data[nfgenHdrLen:], func(typ uint16, v []byte) error {
		switch typ {
		case attrTimestamp:
			t, err := parseTimestamp("NFULA_TIMESTAMP", v)
			if err != nil {
				return err
			}
			r.Time = t
		case attrPayload:
			payload, havePayload = v, true
		case attrPrefix:
			s := string(v)
			if i := strings.IndexByte(s, 0); i >= 0 {
				s = s[:i]
			}
			r.Prefix = s
		case attrUID, attrGID, attrSeq:
			if len(v) < 4 {
				return fmt.Errorf("NFULA attribute %d of %d bytes: %w", typ, len(v), errTruncated)
			}
			n := be.Uint32(v)
			switch typ {
			case attrUID:
				r.UID = int(n)
			case attrGID:
				r.GID = int(n)
			default:
				r.seq, r.hasSeq = n, true
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	if !havePayload {
		return r, errors.New("NFLOG packet without NFULA_PAYLOAD (copy mode not packet?)")
	}
	if err := parseIP(payload, &r.Event); err != nil {
		return r, err
	}
	return r, nil
}

// parseTimestamp reads a be64 seconds, be64 microseconds timestamp
// attribute (NFULA_TIMESTAMP, NFQA_TIMESTAMP) named name.
func parseTimestamp(name string, v []byte) (time.Time, error) {
	if len(v) < timestampBytes {
		return time.Time{}, fmt.Errorf("%s of %d bytes: %w", name, len(v), errTruncated)
	}
	sec, usec := be.Uint64(v), be.Uint64(v[8:])
	if sec > math.MaxInt64/2 || usec >= 1e6 {
		return time.Time{}, fmt.Errorf("%s %d.%06d out of range", name, sec, usec)
	}
	return time.Unix(int64(sec), int64(usec)*1000), nil
}

// parseDatagram calls fn for every well-formed NFULNL_MSG_PACKET in one
// datagram read from the socket, skipping messages of other types. It
// returns the errors of the messages it skipped as malformed.
func parseDatagram(b []byte, now time.Time, fn func(record)) error {
	msgs, err := splitMessages(b)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range msgs {
		if m.typ != msgTypePacket {
			continue
		}
		r, err := parsePacket(m.data, now)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fn(r)
	}
	return errors.Join(errs...)
}
