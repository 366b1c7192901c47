//go:build linux

package bypass

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Monitor reads one NFLOG group of one network namespace.
type Monitor struct {
	nlConn
	group uint16

	mu sync.Mutex // guards the drop accounting below
	// dropped counts messages known lost; unaccounted counts overruns
	// (ENOBUFS) not yet matched by a gap in the sequence numbers.
	dropped, unaccounted uint64
	nextSeq              uint32
	seqMode              int // 0 unknown, 1 messages carry NFULA_SEQ, -1 they do not
}

// Open binds NFLOG group in the network namespace at innerNetNS (a
// /proc/PID/ns/net path or a bind mount of one; "" means the caller's own
// namespace). The socket is created inside that namespace and stays tied to
// it, so the caller keeps running in its own. Only one socket per
// namespace can hold a group: a second Open of the same group fails.
//
// PF_BIND is not sent: `log group` selects nfnetlink_log by itself on
// every kernel moat supports, and PF_BIND would instead rebind the
// namespace's default logger, changing where plain `log` rules go.
// The kernel reports the owner of the sending socket (NFULA_UID and
// NFULA_GID) whenever the packet has one; nfnetlink_log has no flag for it.
func Open(innerNetNS string, group uint16) (*Monitor, error) {
	m := &Monitor{group: group}
	if err := m.dial(innerNetNS, "nflog"); err != nil {
		return nil, fmt.Errorf("bypass: NFLOG socket in %s: %w", where(innerNetNS), err)
	}
	if err := m.request(bindRequest(group, bindSeq, copyRange), bindSeq, m.overrun); err != nil {
		_ = m.f.Close()
		return nil, fmt.Errorf("bypass: bind NFLOG group %d in %s: %w", group, where(innerNetNS), err)
	}
	return m, nil
}

// Run calls fn for each logged packet until ctx is done (it then returns
// ctx.Err()) or the Monitor is closed (it then returns nil). fn runs on
// Run's goroutine; while it runs, packets queue in the socket buffer and,
// once that is full, are dropped and counted by Dropped. Run survives
// such overruns. Only one Run may be active at a time.
func (m *Monitor) Run(ctx context.Context, fn func(Event)) error {
	if fn == nil {
		return errors.New("bypass: Run needs a callback")
	}
	deliver := func(b []byte, at time.Time) error {
		m.deliver(b, at, fn)
		return nil
	}
	return m.run(ctx, fmt.Sprintf("NFLOG group %d", m.group), deliver, m.overrun)
}

// Dropped is how many logged packets the monitor lost so far because the
// socket buffer overflowed (counted from the kernel's sequence numbers, or
// one per overrun when the kernel sends none).
func (m *Monitor) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped + m.unaccounted
}

// Close releases the socket, which also unbinds the group; a running Run
// returns nil. Close is idempotent.
func (m *Monitor) Close() error { return m.close("NFLOG") }

// deliver parses one datagram, accounts for sequence gaps and calls fn.
// Malformed messages are skipped: the kernel does not send them.
func (m *Monitor) deliver(b []byte, at time.Time, fn func(Event)) {
	_ = parseDatagram(b, at, func(r record) {
		m.account(r)
		fn(r.Event)
	})
}

func (m *Monitor) account(r record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !r.hasSeq {
		m.seqMode = -1
		m.dropped += m.unaccounted
		m.unaccounted = 0
		return
	}
	m.seqMode = 1
	// The instance is new, so its sequence starts at zero; a gap is the
	// number of messages lost, and a huge one is a wrap or a reorder.
	if gap := r.seq - m.nextSeq; gap < math.MaxInt32 {
		m.dropped += max(uint64(gap), m.unaccounted)
	}
	m.unaccounted = 0
	m.nextSeq = r.seq + 1
}

func (m *Monitor) overrun() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seqMode < 0 {
		m.dropped++
	} else {
		m.unaccounted++
	}
}
