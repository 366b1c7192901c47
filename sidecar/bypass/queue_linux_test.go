//go:build linux

package bypass

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

const testQueue = 4243

// queueRules are the rules hooks puts before the log rule of an egress
// sandbox: TCP packets with RejectMark get a reset, new TCP connections go
// to NFQUEUE num (nftables' queue expression, or with xtQueue the xtables
// NFQUEUE target), without the bypass flag.
func queueRules(num uint16, xtQueue bool) [][]expr.Any {
	tcp := func() []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
	}
	var queue expr.Any = &expr.Queue{Num: num, Total: 1}
	if xtQueue {
		info := xt.Unknown(append(append(binaryutil.NativeEndian.PutUint16(num), binaryutil.NativeEndian.PutUint16(1)...), 0, 0))
		queue = &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
	}
	zero := binaryutil.NativeEndian.PutUint32(0)
	return [][]expr.Any{
		append(tcp(),
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(RejectMark)},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
		append(tcp(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}}, // SYN without ACK
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: zero},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
			queue),
	}
}

func openQueue(t *testing.T, path string) *Queue {
	t.Helper()
	q, err := OpenQueue(path, testQueue)
	if err != nil {
		t.Fatalf("OpenQueue: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

// runQueue runs q.Run in the background with fn and checks, when the test
// ends, that it returned.
func runQueue(t *testing.T, q *Queue, fn func(Event)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, fn) }()
	t.Cleanup(func() {
		cancel()
		if err := waitDone(t, done); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !q.running.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start")
		}
	}
}

// dialTCP connects from inside the netns at path as testUID/testGID.
func dialTCP(t *testing.T, path, network, addr string, timeout time.Duration) (time.Duration, error) {
	var (
		err  error
		took time.Duration
	)
	inNetNS(t, path, func() {
		start := time.Now()
		var conn net.Conn
		conn, err = (&net.Dialer{Timeout: timeout}).Dial(network, addr)
		took = time.Since(start)
		if conn != nil {
			_ = conn.Close()
		}
	})
	return took, err
}

func TestQueueRefusesAndNames(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	ipv6 := setupInner(t, path, testQueue)
	q := openQueue(t, path)
	if q2, err := OpenQueue(path, testQueue); err == nil {
		_ = q2.Close()
		t.Fatal("second OpenQueue of the same queue succeeded")
	} else if !strings.Contains(err.Error(), "another socket") {
		t.Errorf("second OpenQueue: %v", err)
	}
	logged := collect(t, openMonitor(t, path))

	var dialing atomic.Bool // true while a connect is in progress
	events := make(chan Event, 16)
	runQueue(t, q, func(ev Event) {
		if !dialing.Load() {
			t.Errorf("callback for %v after the connect returned", ev.Dst)
		}
		events <- ev
	})

	check := func(network, dst, src string) {
		t.Helper()
		dialing.Store(true)
		took, err := dialTCP(t, path, network, dst, 5*time.Second)
		dialing.Store(false)
		if !errors.Is(err, syscall.ECONNREFUSED) || took > 100*time.Millisecond {
			t.Errorf("connect to %s: %v after %v, want ECONNREFUSED within 100ms", dst, err, took)
		}
		select {
		case ev := <-events:
			if ev.Protocol != "tcp" || ev.Dst != netip.MustParseAddrPort(dst) || ev.Src.Addr() != netip.MustParseAddr(src) || ev.Src.Port() == 0 {
				t.Errorf("event %+v, want tcp from %s with a port to %s", ev, src, dst)
			}
			if ev.UID != testUID || ev.GID != testGID {
				t.Errorf("event uid %d gid %d, want %d %d", ev.UID, ev.GID, testUID, testGID)
			}
			if d := time.Since(ev.Time); d < 0 || d > time.Minute {
				t.Errorf("event time %v is not recent", ev.Time)
			}
		default:
			t.Errorf("connect to %s: no queue event", dst)
		}
		t.Logf("connect to %s: %v after %v", dst, err, took)
	}
	check("tcp4", "192.0.2.1:80", "10.99.0.2")
	check("tcp4", "10.99.0.7:443", "10.99.0.2")
	if ipv6 {
		check("tcp6", "[2001:db8::1]:443", "fd00:99::2")
	}

	// UDP still goes to NFLOG; the TCP SYNs never reached the log rule.
	inNetNS(t, path, func() { _ = sendUDP(netip.MustParseAddrPort("192.0.2.1:53")) })
	logged.waitFor(t, "udp 192.0.2.1:53", func(ev Event) bool {
		if ev.Protocol == "tcp" {
			t.Errorf("NFLOG event for the queued TCP SYN %v -> %v", ev.Src, ev.Dst)
		}
		return ev.Protocol == "udp"
	})
	if d := q.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d, want 0", d)
	}
}

func TestQueueNoListener(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	setupInner(t, path, testQueue)
	// Nobody on the queue yet, then a queue closed: the SYN is dropped,
	// the connect times out and never gets through.
	for i := range 2 {
		took, err := dialTCP(t, path, "tcp4", "192.0.2.1:80", 300*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("connect %d without a listener: %v after %v, want a timeout", i, err, took)
		}
		if i == 0 {
			q, err := OpenQueue(path, testQueue)
			if err != nil {
				t.Fatalf("OpenQueue: %v", err)
			}
			if err := q.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
	}
}

func TestQueueOverrun(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	setupInner(t, path, testQueue)
	q := openQueue(t, path)
	var serr error
	if err := q.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1) }); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	// Non-blocking connects queue their SYNs while nobody reads.
	const flood = 200
	var fds []int
	inNetNS(t, path, func() {
		for i := range flood {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return
			}
			fds = append(fds, fd)
			_ = unix.Connect(fd, &unix.SockaddrInet4{Port: 1000 + i, Addr: [4]byte{192, 0, 2, 1}})
		}
	})
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	if err := q.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBufferBytes)
	}); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	var n atomic.Int64
	runQueue(t, q, func(Event) { n.Add(1) })
	// The queue works again: the connect is refused by the reader's
	// verdict, not left to time out. While the reader still drains the
	// flood (and the flood's own retransmitted SYNs), a busy machine can
	// drop this SYN once too: one retransmission, a second later, is
	// allowed.
	took, err := dialTCP(t, path, "tcp4", "192.0.2.1:80", 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || took > 2500*time.Millisecond {
		t.Errorf("connect after the overrun: %v after %v, want ECONNREFUSED within a retransmission", err, took)
	}
	t.Logf("flood of %d: %d events, Dropped() = %d", flood, n.Load(), q.Dropped())
	if q.Dropped() == 0 {
		t.Errorf("Dropped() = 0 after a flood into a 1-byte buffer")
	}
}

func TestQueueStop(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	q := openQueue(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, func(Event) {}) }()
	for !q.running.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := q.Run(context.Background(), func(Event) {}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := waitDone(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v, want context.Canceled", err)
	}
	go func() { done <- q.Run(context.Background(), func(Event) {}) }()
	for !q.running.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := q.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := waitDone(t, done); err != nil {
		t.Errorf("Run after Close: %v, want nil", err)
	}
	if err := q.Run(context.Background(), func(Event) {}); err != nil {
		t.Errorf("Run on a closed queue: %v, want nil", err)
	}
}
