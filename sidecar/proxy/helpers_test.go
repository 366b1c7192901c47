package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/declog"
	"github.com/moatsandbox/moat/sidecar/identity"
)

// fakeDecider allows the destinations in allow (keyed host:port) and
// denies the rest; l7 decides requests.
type fakeDecider struct {
	mu    sync.Mutex
	allow map[string]policy.Decision
	l7    func(policy.Request) policy.Decision
	err   error
	seen  []policy.Input
}

func (f *fakeDecider) set(key string, d policy.Decision) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.allow == nil {
		f.allow = map[string]policy.Decision{}
	}
	f.allow[key] = d
}

func (f *fakeDecider) remove(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.allow, key)
}

func (f *fakeDecider) Decide(_ context.Context, in policy.Input) (policy.Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, in)
	if f.err != nil {
		return policy.Decision{Action: policy.Deny, Engine: "opa"}, f.err
	}
	if d, ok := f.allow[net.JoinHostPort(in.Host, strconv.Itoa(int(in.Port)))]; ok {
		return d, nil
	}
	return policy.Decision{Action: policy.Deny, Engine: "opa", Reason: policy.EndpointReason(in.Host, in.Port, "web")}, nil
}

func (f *fakeDecider) DecideRequest(ctx context.Context, req policy.Request) (policy.Decision, error) {
	d, err := f.Decide(ctx, req.Input)
	if err != nil || !d.Allowed() {
		return d, err
	}
	f.mu.Lock()
	l7 := f.l7
	f.mu.Unlock()
	if l7 == nil {
		return d, nil
	}
	return l7(req), nil
}

func allowed(key string) policy.Decision {
	return policy.Decision{Action: policy.Allow, Policy: key, Engine: "opa", Endpoint: &policy.Endpoint{}}
}

var curl = &identity.Process{
	PID:          42,
	Exe:          policy.Exe{Path: "/usr/bin/curl", Fingerprint: "c0ffee"},
	Ancestors:    []policy.Exe{{Path: "/usr/bin/bash", Fingerprint: "ba5h"}},
	AncestorPIDs: []int{7},
}

func identifyCurl(context.Context, netip.AddrPort, netip.AddrPort) (*identity.Process, error) {
	return curl, nil
}

// testResolve resolves IP literals and the names in the map.
func testResolve(names map[string][]netip.Addr) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, err := netip.ParseAddr(host); err == nil {
			return []netip.Addr{a}, nil
		}
		if addrs, ok := names[strings.TrimSuffix(host, ".")]; ok {
			return addrs, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}

// permissive lets loopback test upstreams through.
func permissive(_ string, _ uint16, addrs []netip.Addr, _ []string) (netip.Addr, error) {
	return addrs[0], nil
}

// memSink keeps records.
type memSink struct {
	mu   sync.Mutex
	recs []declog.Record
}

func (m *memSink) Log(r declog.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
}

func (m *memSink) all() []declog.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]declog.Record(nil), m.recs...)
}

// last waits briefly for at least n records and returns the last.
func (m *memSink) last(t *testing.T, n int) declog.Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if recs := m.all(); len(recs) >= n {
			return recs[len(recs)-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d records, have %v", n, m.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type harness struct {
	addr   string
	srv    *Server
	dec    *fakeDecider
	sink   *memSink
	served chan error
}

// start runs a proxy on loopback; edit adjusts the default config
// (fake decider and identity, test names, permissive SSRF check).
func start(t testing.TB, edit func(*Config)) *harness {
	t.Helper()
	h := &harness{dec: &fakeDecider{}, sink: &memSink{}, served: make(chan error, 1)}
	cfg := Config{Sandbox: "sb1", Decider: h.dec, Identify: identifyCurl, Check: permissive, Log: h.sink,
		Resolve: testResolve(map[string][]netip.Addr{"echo.test": {netip.MustParseAddr("127.0.0.1")}})}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.srv, h.addr = srv, l.Addr().String()
	go func() { h.served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-h.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

// serveConns listens on a loopback port until the test ends and runs
// handle on each connection in a goroutine of its own, closing the
// connection when handle returns.
func serveConns(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// echoServer echoes each connection until EOF, then half-closes.
func echoServer(t testing.TB) (string, uint16) {
	t.Helper()
	ap := serveConns(t, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	return ap.String(), ap.Port()
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t testing.TB) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).AddrPort().Port()
	l.Close()
	return p
}

// dial opens a client connection to the proxy.
func (h *harness) dial(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip sends raw bytes and reads one response.
func (h *harness) roundTrip(t *testing.T, raw string) (*http.Response, string, *bufio.Reader) {
	t.Helper()
	c := h.dial(t)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(raw + " x")[0]})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var body string
	if resp.StatusCode != http.StatusOK || resp.Request.Method != http.MethodConnect {
		b, err := io.ReadAll(resp.Body)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read body: %v", err)
		}
		body = string(b)
	}
	return resp, body, br
}

func connectReq(hostport string) string {
	return fmt.Sprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: test\r\n\r\n", hostport, hostport)
}
