//go:build linux

package bypass

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// queueMaxLen bounds the packets waiting for a verdict; past it the kernel
// drops new ones (a dropped SYN is sent again a second later).
const queueMaxLen = 1024

// Queue reads one NFQUEUE of one network namespace and answers every
// packet with NF_REPEAT and RejectMark.
type Queue struct {
	nlConn
	num      uint16
	seq      uint32 // of the verdicts; used by Run only
	overruns atomic.Uint64
}

// OpenQueue binds NFQUEUE num in the network namespace at innerNetNS (a
// /proc/PID/ns/net path or a bind mount of one; "" means the caller's own
// namespace). As with Open, the socket is created inside that namespace
// on a locked thread and stays tied to it. Only one socket per namespace
// can hold a queue: a second OpenQueue of the same number fails.
//
// The queue copies the first bytes of each packet (enough for the IP and
// TCP headers), holds at most queueMaxLen packets and reports the owner of
// the sending socket. It is never fail-open: a packet the queue cannot
// take, or one queued while nobody listens, is dropped by the kernel.
// Binding, and every verdict, need CAP_NET_ADMIN over the namespace.
func OpenQueue(innerNetNS string, num uint16) (*Queue, error) {
	q := &Queue{num: num, seq: bindSeq}
	if err := q.dial(innerNetNS, "nfqueue"); err != nil {
		return nil, fmt.Errorf("bypass: NFQUEUE socket in %s: %w", where(innerNetNS), err)
	}
	err := q.request(queueBindRequest(num, bindSeq, copyRange, queueMaxLen), bindSeq, q.overrun)
	if err != nil {
		_ = q.f.Close()
		return nil, fmt.Errorf("bypass: bind NFQUEUE %d in %s: %w", num, where(innerNetNS), err)
	}
	return q, nil
}

// Run reads the queued packets until ctx is done (it then returns
// ctx.Err()) or the Queue is closed (it then returns nil). For each packet
// it calls fn with the parsed Event, on Run's goroutine, then lets the
// packet traverse the hook again with RejectMark set, so that the chain's
// reject rule answers it. The packet, and the connect(2) that sent it,
// wait for fn: fn must be quick and bounded. A packet that cannot be
// parsed gets its verdict without fn. Run survives socket overruns (the
// kernel drops the packets it could not queue); it returns an error when a
// verdict cannot be sent or the kernel refuses verdicts. Only one Run may
// be active at a time.
func (q *Queue) Run(ctx context.Context, fn func(Event)) error {
	if fn == nil {
		return errors.New("bypass: Run needs a callback")
	}
	handle := func(b []byte, at time.Time) error { return q.handle(b, at, fn) }
	return q.run(ctx, fmt.Sprintf("NFQUEUE %d", q.num), handle, q.overrun)
}

// Dropped is how many times the socket buffer overflowed so far; each
// time the kernel dropped at least one queued packet.
func (q *Queue) Dropped() uint64 { return q.overruns.Load() }

// Close releases the socket, which also unbinds the queue: the kernel
// drops the packets still waiting and, from then on, every packet the
// rules queue. A running Run returns nil. Close is idempotent.
func (q *Queue) Close() error { return q.close("NFQUEUE") }

func (q *Queue) overrun() { q.overruns.Add(1) }

// handle answers every queued packet of one datagram, and turns the
// kernel's refusal of a verdict into an error.
func (q *Queue) handle(b []byte, at time.Time, fn func(Event)) error {
	msgs, _ := splitMessages(b) // what comes after a malformed header is lost
	for _, m := range msgs {
		switch m.typ {
		case msgQueuePacket:
			p, err := parseQueuePacket(m.data, at)
			if !p.hasID {
				continue // nothing to answer
			}
			if err == nil {
				fn(p.Event)
			}
			if err := q.verdict(p.id); err != nil {
				return err
			}
		case nlmsgError:
			// Only verdicts that failed are answered. ENOENT (the packet
			// is gone) is harmless; EPERM means no verdict will ever pass.
			if err := ackError(m.data); errors.Is(err, unix.EPERM) {
				return fmt.Errorf("bypass: NFQUEUE %d: the kernel refuses the verdicts (%w): they need CAP_NET_ADMIN", q.num, err)
			}
		}
	}
	return nil
}

// verdict sends NF_REPEAT with RejectMark for packet id.
func (q *Queue) verdict(id uint32) error {
	q.seq++
	if err := q.send(verdictRequest(q.num, q.seq, id, verdictRepeat, RejectMark)); err != nil {
		return fmt.Errorf("bypass: NFQUEUE %d verdict for packet %d: %w", q.num, id, err)
	}
	return nil
}
