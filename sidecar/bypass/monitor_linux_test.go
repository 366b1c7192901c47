//go:build linux

package bypass

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	testGroup  = 4242
	testPrefix = "moat:bypass:test:"
	testUID    = 4321
	testGID    = 8765
)

func TestAckError(t *testing.T) {
	if err := ackError([]byte{0, 0, 0, 0, 1, 2}); err != nil {
		t.Errorf("ack: %v", err)
	}
	if err := ackError(ne.AppendUint32(nil, uint32(0xffffffff-uint32(unix.EBUSY)+1))); !errors.Is(err, unix.EBUSY) {
		t.Errorf("-EBUSY: %v", err)
	}
	for _, b := range [][]byte{{1}, ne.AppendUint32(nil, 5), ne.AppendUint32(nil, 0x80000000)} {
		if err := ackError(b); err == nil {
			t.Errorf("ackError(%x): no error", b)
		}
	}
}

func TestDropAccounting(t *testing.T) {
	m := &Monitor{}
	m.account(record{seq: 0, hasSeq: true})
	m.account(record{seq: 1, hasSeq: true})
	if m.Dropped() != 0 {
		t.Fatalf("no gap: dropped %d", m.Dropped())
	}
	m.overrun()
	if m.Dropped() != 1 {
		t.Fatalf("after overrun: dropped %d, want 1 until the gap is known", m.Dropped())
	}
	m.account(record{seq: 10, hasSeq: true}) // 2..9 lost
	if m.Dropped() != 8 {
		t.Fatalf("after gap: dropped %d, want 8", m.Dropped())
	}
	m.account(record{seq: 5, hasSeq: true}) // backwards: not a loss
	if m.Dropped() != 8 {
		t.Fatalf("after reorder: dropped %d, want 8", m.Dropped())
	}

	// Without sequence numbers, each overrun counts one.
	m = &Monitor{}
	m.overrun()
	m.account(record{})
	m.overrun()
	if m.Dropped() != 2 {
		t.Fatalf("no seq: dropped %d, want 2", m.Dropped())
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), testGroup); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open(missing path): %v", err)
	}
	f := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f, testGroup); err == nil || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Open(plain file): %v, want EINVAL from setns", err)
	}
}

func TestMonitorBypass(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	ipv6 := setupInner(t, path, 0)
	m := openMonitor(t, path)
	c := collect(t, m)

	var (
		tcpErr, udpErr, udp6Err error
		tcpTook                 time.Duration
	)
	inNetNS(t, path, func() {
		start := time.Now()
		conn, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp4", "192.0.2.1:80")
		tcpErr, tcpTook = err, time.Since(start)
		if conn != nil {
			_ = conn.Close()
		}
		udpErr = sendUDP(netip.MustParseAddrPort("192.0.2.1:53"))
		if ipv6 {
			udp6Err = sendUDP(netip.MustParseAddrPort("[2001:db8::1]:53"))
		}
	})
	if !errors.Is(tcpErr, syscall.ECONNREFUSED) && !errors.Is(tcpErr, syscall.EHOSTUNREACH) {
		t.Errorf("direct TCP connect: %v, want connection refused or host unreachable", tcpErr)
	}
	if tcpTook > 2*time.Second {
		t.Errorf("direct TCP connect took %v, want an immediate refusal", tcpTook)
	}
	t.Logf("TCP connect: %v after %v; UDP send: %v; UDP6 send: %v", tcpErr, tcpTook, udpErr, udp6Err)

	check := func(proto, dst, src string) {
		t.Helper()
		want := netip.MustParseAddrPort(dst)
		ev, _ := c.waitFor(t, proto+" "+dst, func(ev Event) bool { return ev.Protocol == proto && ev.Dst == want })
		if ev.Src.Addr() != netip.MustParseAddr(src) || ev.Src.Port() == 0 {
			t.Errorf("%s %s: source %v, want %s with a port", proto, dst, ev.Src, src)
		}
		if ev.UID != testUID || ev.GID != testGID || ev.Prefix != testPrefix {
			t.Errorf("%s %s: uid %d gid %d prefix %q, want %d %d %q", proto, dst, ev.UID, ev.GID, ev.Prefix, testUID, testGID, testPrefix)
		}
		if d := time.Since(ev.Time); d < 0 || d > time.Minute {
			t.Errorf("%s %s: time %v is not recent", proto, dst, ev.Time)
		}
	}
	check("tcp", "192.0.2.1:80", "10.99.0.2")
	check("udp", "192.0.2.1:53", "10.99.0.2")
	if ipv6 {
		check("udp", "[2001:db8::1]:53", "fd00:99::2")
	}
	if d := m.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d, want 0", d)
	}
}

func TestMonitorOverrun(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)
	setupInner(t, path, 0)
	m := openMonitor(t, path)

	// A second listener on the same group is refused.
	if m2, err := Open(path, testGroup); err == nil {
		_ = m2.Close()
		t.Fatal("second Open of the same group succeeded")
	} else if !strings.Contains(err.Error(), "another socket") {
		t.Errorf("second Open: %v", err)
	}

	// Overflow the socket: a tiny buffer and nobody reading.
	setRcvbuf := func(n int) {
		var serr error
		if err := m.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) }); err != nil || serr != nil {
			t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
		}
	}
	setRcvbuf(1)
	const flood = 300
	inNetNS(t, path, func() {
		for range flood {
			_ = sendUDP(netip.MustParseAddrPort("192.0.2.1:53"))
		}
	})
	setRcvbuf(recvBufferBytes)

	// Until Run has drained the queue the socket stays congested and the
	// kernel drops new messages too, so send markers until one arrives.
	c := collect(t, m)
	var (
		flooded int
		ev      Event
		got     bool
	)
	for try := 0; !got; try++ {
		if try == 50 {
			t.Fatal("no marker event after the overrun: Run stopped delivering")
		}
		inNetNS(t, path, func() { _ = sendUDP(netip.MustParseAddrPort("192.0.2.1:9999")) })
		ev, got = c.next(100*time.Millisecond, func(ev Event) bool {
			if ev.Dst.Port() == 53 {
				flooded++
			}
			return ev.Dst.Port() == 9999
		})
	}
	if ev.UID != testUID {
		t.Errorf("marker uid %d, want %d", ev.UID, testUID)
	}
	d := m.Dropped()
	t.Logf("flood of %d: %d delivered, Dropped() = %d", flood, flooded, d)
	if d == 0 || uint64(flooded)+d < flood {
		t.Errorf("delivered %d + dropped %d, want a drop and at least %d in all", flooded, d, flood)
	}
}

func TestMonitorStop(t *testing.T) {
	requireRoot(t)
	path := pinnedNetNS(t)

	m := openMonitor(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, func(Event) {}) }()
	waitRunning(t, m)
	if err := m.Run(context.Background(), func(Event) {}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := waitDone(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v, want context.Canceled", err)
	}

	// Run again on the same monitor, then Close it.
	go func() { done <- m.Run(context.Background(), func(Event) {}) }()
	waitRunning(t, m)
	var wg sync.WaitGroup
	wg.Add(2)
	for range 2 {
		go func() { defer wg.Done(); _ = m.Close() }()
	}
	wg.Wait()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Run after Close: %v, want nil", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
