//go:build linux

package bypass

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// copyRange is how many bytes of each packet the kernel copies: enough
	// for an IPv6 header, a few extension headers and the ports.
	copyRange = 128
	// recvBufferBytes is the socket receive buffer asked for, so bursts
	// survive a slow callback.
	recvBufferBytes = 1 << 20
	// readBufferBytes holds one datagram; the kernel's default NFLOG
	// buffer is 4 KiB and each message is under 300 bytes here.
	readBufferBytes = 64 << 10
	// ackTimeout bounds the wait for the kernel's answer to the bind.
	ackTimeout = 5 * time.Second
	bindSeq    = 1
)

// errNotKernel marks a datagram that did not come from the kernel.
var errNotKernel = errors.New("netlink datagram from a process, not the kernel")

// Monitor reads one NFLOG group of one network namespace.
type Monitor struct {
	f       *os.File
	rc      syscall.RawConn
	group   uint16
	buf     []byte
	pending []datagram // read while waiting for the bind acknowledgement

	running   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	mu sync.Mutex // guards the drop accounting below
	// dropped counts messages known lost; unaccounted counts overruns
	// (ENOBUFS) not yet matched by a gap in the sequence numbers.
	dropped, unaccounted uint64
	nextSeq              uint32
	seqMode              int // 0 unknown, 1 messages carry NFULA_SEQ, -1 they do not
}

type datagram struct {
	b  []byte
	at time.Time
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
	where := "the current network namespace"
	if innerNetNS != "" {
		where = "network namespace " + innerNetNS
	}
	fd, err := socketInNetNS(innerNetNS)
	if err != nil {
		return nil, fmt.Errorf("bypass: NFLOG socket in %s: %w", where, err)
	}
	// Best effort: without CAP_NET_ADMIN the kernel caps SO_RCVBUF at
	// net.core.rmem_max, which still works, only with earlier drops.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBufferBytes) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBufferBytes)
	}
	f := os.NewFile(uintptr(fd), "nflog")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bypass: NFLOG socket in %s: %w", where, err)
	}
	m := &Monitor{f: f, rc: rc, group: group, buf: make([]byte, readBufferBytes)}
	if err := m.bind(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bypass: bind NFLOG group %d in %s: %w", group, where, err)
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
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("bypass: Run is already running on this monitor")
	}
	defer m.running.Store(false)
	if err := m.f.SetReadDeadline(time.Time{}); err != nil {
		if m.closed.Load() {
			return nil
		}
		return fmt.Errorf("bypass: NFLOG group %d: %w", m.group, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stop, watcher := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-ctx.Done():
			// Wake the blocked read; it returns os.ErrDeadlineExceeded.
			_ = m.f.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	defer func() { close(stop); <-watcher }()

	pending := m.pending
	m.pending = nil
	for _, d := range pending {
		m.deliver(d.b, d.at, fn)
	}
	for {
		b, err := m.recv()
		switch {
		case err == nil:
			m.deliver(b, time.Now(), fn)
		case errors.Is(err, unix.ENOBUFS):
			m.overrun()
		case errors.Is(err, errNotKernel):
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return ctx.Err()
			}
		case m.closed.Load():
			return nil
		default:
			return fmt.Errorf("bypass: reading NFLOG group %d: %w", m.group, err)
		}
	}
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
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		if err := m.f.Close(); err != nil {
			m.closeErr = fmt.Errorf("bypass: close NFLOG socket: %w", err)
		}
	})
	return m.closeErr
}

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

// bind sends the bind request and waits for its acknowledgement, keeping
// any packet messages that arrive first for Run.
func (m *Monitor) bind() error {
	if err := m.send(bindRequest(m.group, bindSeq, copyRange)); err != nil {
		return err
	}
	if err := m.f.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return err
	}
	defer func() { _ = m.f.SetReadDeadline(time.Time{}) }()
	for {
		b, err := m.recv()
		switch {
		case errors.Is(err, unix.ENOBUFS):
			m.overrun()
			continue
		case errors.Is(err, errNotKernel):
			continue
		case err != nil:
			return fmt.Errorf("waiting for the kernel's answer: %w", err)
		}
		msgs, _ := splitMessages(b)
		acked, other := false, false
		var ackErr error
		for _, msg := range msgs {
			if msg.typ == nlmsgError && msg.seq == bindSeq {
				acked, ackErr = true, ackError(msg.data)
			} else {
				other = true
			}
		}
		if other {
			m.pending = append(m.pending, datagram{b: bytes.Clone(b), at: time.Now()})
		}
		if !acked {
			continue
		}
		if errors.Is(ackErr, unix.EBUSY) || errors.Is(ackErr, unix.EPERM) {
			return fmt.Errorf("another socket already listens on this group (%w)", ackErr)
		}
		return ackErr
	}
}

func (m *Monitor) send(b []byte) error {
	var serr error
	err := m.rc.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return fmt.Errorf("send config: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send config: %w", os.NewSyscallError("sendto", serr))
	}
	return nil
}

// recv reads one datagram into m.buf. A datagram larger than the buffer
// is counted as dropped and the buffer grown for the next one.
func (m *Monitor) recv() ([]byte, error) {
	var (
		n    int
		from unix.Sockaddr
		rerr error
	)
	err := m.rc.Read(func(fd uintptr) bool {
		for {
			n, from, rerr = unix.Recvfrom(int(fd), m.buf, unix.MSG_TRUNC)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, os.NewSyscallError("recvfrom", rerr)
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return nil, errNotKernel
	}
	if n > len(m.buf) {
		m.buf = make([]byte, align4(n))
		return nil, unix.ENOBUFS
	}
	return m.buf[:n], nil
}

// ackError reads the errno of an NLMSG_ERROR message (zero for an
// acknowledgement).
func ackError(data []byte) error {
	if len(data) < 4 {
		return fmt.Errorf("netlink error message of %d bytes: %w", len(data), errTruncated)
	}
	code := int32(ne.Uint32(data))
	switch {
	case code == 0:
		return nil
	case code > 0 || code == math.MinInt32:
		return fmt.Errorf("netlink error message with code %d", code)
	}
	return unix.Errno(-code)
}

// socketInNetNS creates and binds a NETLINK_NETFILTER socket inside the
// network namespace at path. It runs on a locked OS thread that enters the
// namespace and comes back; if it cannot come back, the thread stays locked
// and the runtime discards it with its goroutine.
func socketInNetNS(path string) (int, error) {
	if path == "" {
		return newNetlinkSocket()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(target)

	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, &os.PathError{Op: "open", Path: "/proc/thread-self/ns/net", Err: err}}
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // the thread did not move
			done <- result{-1, fmt.Errorf("enter %s: %w", path, os.NewSyscallError("setns", err))}
			return
		}
		fd, serr := newNetlinkSocket()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			if serr == nil {
				_ = unix.Close(fd)
			}
			done <- result{-1, fmt.Errorf("return from %s: %w", path, os.NewSyscallError("setns", err))}
			return // still locked: the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		done <- result{fd, serr}
	}()
	r := <-done
	return r.fd, r.err
}

func newNetlinkSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}
