package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/ssrf"
)

func TestRecheckClosesDeniedTunnels(t *testing.T) {
	_, port := echoServer(t)
	h := start(t, nil)
	keep, drop := fmt.Sprintf("echo.test:%d", port), fmt.Sprintf("127.0.0.1:%d", port)
	h.dec.set(keep, allowed("keep"))
	h.dec.set(drop, allowed("drop"))
	open := func(target string) (*net.TCPConn, func() error) {
		c := h.dial(t)
		io.WriteString(c, connectReq(target))
		buf := make([]byte, len(established))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != string(established) {
			t.Fatalf("open %s: %q %v", target, buf, err)
		}
		return c, func() error {
			io.WriteString(c, "ping")
			b := make([]byte, 4)
			_, err := io.ReadFull(c, b)
			return err
		}
	}
	_, pingKeep := open(keep)
	cDrop, pingDrop := open(drop)
	if pingKeep() != nil || pingDrop() != nil {
		t.Fatal("tunnels do not work")
	}
	if n := h.srv.Recheck(context.Background()); n != 0 {
		t.Fatalf("Recheck closed %d with nothing changed", n)
	}
	h.dec.remove(drop)
	if n := h.srv.Recheck(context.Background()); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	cDrop.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(cDrop); err != nil && !isReset(err) {
		t.Fatalf("closed tunnel read: %v", err)
	}
	if err := pingKeep(); err != nil {
		t.Fatalf("surviving tunnel: %v", err)
	}
	rec := h.sink.last(t, 3)
	if rec.Action != "deny" || rec.Policy != "" || rec.Port != port ||
		!strings.HasPrefix(rec.Reason, "closed after policy reload: endpoint 127.0.0.1:") {
		t.Fatalf("record %+v", rec)
	}
	// A new allowed_ips list that excludes the dialled address closes too.
	h.dec.set(keep, policy.Decision{Action: policy.Allow, Policy: "keep", AllowedIPs: []string{"10.0.0.0/8"}})
	h.srv.cfg.Check = (&ssrf.Guard{}).Check
	if n := h.srv.Recheck(context.Background()); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if rec := h.sink.last(t, 4); rec.Engine != "ssrf" || !strings.Contains(rec.Reason, "127.0.0.1") {
		t.Fatalf("record %+v", rec)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestCloseEndsServeAndTunnels(t *testing.T) {
	_, port := echoServer(t)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("echo"))
	c := h.dial(t)
	io.WriteString(c, connectReq(target))
	buf := make([]byte, len(established))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	idle := h.dial(t) // a client that never sends a head
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
		h.served <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	for _, conn := range []net.Conn{c, idle} {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(conn); err != nil && !isReset(err) {
			t.Fatalf("connection still open after Close: %v", err)
		}
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Fatal("listener still accepting")
	}
	// Serve after Close returns at once.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := h.srv.Serve(l); err != nil {
		t.Fatal(err)
	}
}

func TestSlowHeadTimesOut(t *testing.T) {
	old := headTimeout
	headTimeout = 300 * time.Millisecond
	t.Cleanup(func() { headTimeout = old }) // registered first, so it runs after the server's
	h := start(t, nil)
	c := h.dial(t)
	io.WriteString(c, "CONNECT exam")
	begin := time.Now()
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Fatalf("slow head: %v", err)
	}
	if d := time.Since(begin); d < 200*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
	if len(h.sink.all()) != 0 {
		t.Fatal("an incomplete head was decided")
	}
}
