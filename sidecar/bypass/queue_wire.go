package bypass

import (
	"errors"
	"fmt"
	"time"
)

// RejectMark is the packet mark a Queue's verdicts set. The inner netns's
// output chain (hooks) rejects packets carrying it with a TCP reset, so a
// queued SYN that comes back marked gets its connect(2) refused at once.
// ("moat" in ASCII.)
const RejectMark = 0x6d6f6174

// nfnetlink_queue (include/uapi/linux/netfilter/nfnetlink_queue.h and
// linux/netfilter.h). As with NFLOG, attribute payloads are in network
// byte order.
const (
	subsysQueue     = 3
	msgQueuePacket  = subsysQueue<<8 | 0 // NFQNL_MSG_PACKET
	msgQueueVerdict = subsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	msgQueueConfig  = subsysQueue<<8 | 2 // NFQNL_MSG_CONFIG

	qAttrPacketHdr  = 1  // NFQA_PACKET_HDR: be32 packet_id, be16 hw_protocol, u8 hook
	qAttrVerdictHdr = 2  // NFQA_VERDICT_HDR: be32 verdict, be32 packet_id
	qAttrMark       = 3  // NFQA_MARK: be32
	qAttrTimestamp  = 4  // NFQA_TIMESTAMP: be64 sec, be64 usec
	qAttrPayload    = 10 // NFQA_PAYLOAD
	qAttrUID        = 16 // NFQA_UID: be32
	qAttrGID        = 17 // NFQA_GID: be32

	qCfgAttrCmd    = 1 // NFQA_CFG_CMD: u8 command, pad, be16 pf
	qCfgAttrParams = 2 // NFQA_CFG_PARAMS: be32 copy_range, u8 copy_mode (packed, 5 bytes)
	qCfgAttrMaxLen = 3 // NFQA_CFG_QUEUE_MAXLEN: be32
	qCfgAttrMask   = 4 // NFQA_CFG_MASK: be32, the flags NFQA_CFG_FLAGS sets or clears
	qCfgAttrFlags  = 5 // NFQA_CFG_FLAGS: be32

	qCfgCmdBind   = 1    // NFQNL_CFG_CMD_BIND
	qCopyPacket   = 2    // NFQNL_COPY_PACKET
	qFlagFailOpen = 0x01 // NFQA_CFG_F_FAIL_OPEN: accept what overflows the queue
	qFlagUIDGID   = 0x08 // NFQA_CFG_F_UID_GID: report the socket's owner

	verdictRepeat = 4 // NF_REPEAT: the packet traverses the hook again
)

// queueBindRequest binds queue num to the sending socket in one message:
// the bind command, packet copy mode with copyRange bytes, at most maxLen
// packets waiting for a verdict, and the socket owner reported with each
// packet. Fail-open is explicitly cleared (it is in the mask, not in the
// flags): a packet the queue cannot take is dropped, never accepted. The
// kernel applies the command before the other attributes.
func queueBindRequest(num uint16, seq, copyRange, maxLen uint32) []byte {
	params := be.AppendUint32(nil, copyRange)
	params = append(params, qCopyPacket)
	return buildRequest(msgQueueConfig, nlmFRequest|nlmFAck, seq, 0, num,
		nlAttr{qCfgAttrCmd, []byte{qCfgCmdBind, 0, 0, 0}},
		nlAttr{qCfgAttrParams, params},
		nlAttr{qCfgAttrMaxLen, be.AppendUint32(nil, maxLen)},
		nlAttr{qCfgAttrMask, be.AppendUint32(nil, qFlagFailOpen|qFlagUIDGID)},
		nlAttr{qCfgAttrFlags, be.AppendUint32(nil, qFlagUIDGID)},
	)
}

// verdictRequest gives packet id of queue num the verdict, setting the
// packet's mark. It asks for no acknowledgement; the kernel still answers
// a failure with an error message.
func verdictRequest(num uint16, seq, id, verdict, mark uint32) []byte {
	hdr := be.AppendUint32(nil, verdict)
	hdr = be.AppendUint32(hdr, id)
	return buildRequest(msgQueueVerdict, nlmFRequest, seq, 0, num,
		nlAttr{qAttrVerdictHdr, hdr},
		nlAttr{qAttrMark, be.AppendUint32(nil, mark)},
	)
}

// queuedPacket is a parsed NFQNL_MSG_PACKET: the event and the packet id
// its verdict names. hasID is true as soon as the id was read, even when
// the rest of the message is malformed, so the packet still gets its
// verdict.
type queuedPacket struct {
	Event
	id    uint32
	hasID bool
}

// parseQueuePacket parses the body of an NFQNL_MSG_PACKET message
// (nfgenmsg and attributes); now is used when the kernel sent no
// timestamp (locally sent packets usually have none).
func parseQueuePacket(data []byte, now time.Time) (queuedPacket, error) {
	q := queuedPacket{Event: Event{Time: now, UID: -1, GID: -1}}
	if len(data) < nfgenHdrLen {
		return q, fmt.Errorf("nfgenmsg of %d bytes: %w", len(data), errTruncated)
	}
	var payload []byte
	havePayload := false
	err := walkAttrs(data[nfgenHdrLen:], func(typ uint16, v []byte) error {
		switch typ {
		case qAttrPacketHdr, qAttrUID, qAttrGID:
			if len(v) < 4 {
				return fmt.Errorf("NFQA attribute %d of %d bytes: %w", typ, len(v), errTruncated)
			}
			n := be.Uint32(v)
			switch typ {
			case qAttrPacketHdr:
				q.id, q.hasID = n, true
			case qAttrUID:
				q.UID = int(n)
			default:
				q.GID = int(n)
			}
		case qAttrTimestamp:
			t, err := parseTimestamp("NFQA_TIMESTAMP", v)
			if err != nil {
				return err
			}
			q.Time = t
		case qAttrPayload:
			payload, havePayload = v, true
		}
		return nil
	})
	switch {
	case err != nil:
		return q, err
	case !q.hasID:
		return q, errors.New("queued packet without NFQA_PACKET_HDR")
	case !havePayload:
		return q, errors.New("queued packet without NFQA_PAYLOAD (copy mode not packet?)")
	}
	if err := parseIP(payload, &q.Event); err != nil {
		return q, err
	}
	return q, nil
}
