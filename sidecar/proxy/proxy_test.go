package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/declog"
	"github.com/moatsandbox/moat/sidecar/identity"
	"github.com/moatsandbox/moat/sidecar/ssrf"
)

func TestNewRequiresHooks(t *testing.T) {
	full := Config{Decider: &fakeDecider{}, Identify: identifyCurl, Resolve: testResolve(nil), Check: permissive}
	if _, err := New(full); err != nil {
		t.Fatal(err)
	}
	for _, edit := range []func(*Config){
		func(c *Config) { c.Decider = nil },
		func(c *Config) { c.Identify = nil },
		func(c *Config) { c.Resolve = nil },
		func(c *Config) { c.Check = nil },
	} {
		c := full
		edit(&c)
		if _, err := New(c); err == nil {
			t.Error("New accepted an incomplete config")
		}
	}
}

func TestConnectAllow(t *testing.T) {
	_, port := echoServer(t)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("echo"))

	c := h.dial(t)
	// Early data: bytes right after the head, before the 200 arrives.
	if _, err := io.WriteString(c, connectReq(target)+"early-bytes|"); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 Connection Established\r\n\r\n"
	got := make([]byte, len(want)+len("early-bytes|"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want+"early-bytes|" {
		t.Fatalf("got %q", got)
	}
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB each way
	errc := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, big)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if string(back) != big {
		t.Fatalf("echoed %d bytes, want %d", len(back), len(big))
	}

	rec := h.sink.last(t, 1)
	want1 := declog.Record{Sandbox: "sb1", Action: "allow", Engine: "opa", Binary: "/usr/bin/curl", PID: 42,
		Ancestors: []string{"/usr/bin/bash"}, Protocol: "connect", Host: "echo.test", Port: port,
		Address: "127.0.0.1", Policy: "echo"}
	rec.Time = time.Time{}
	if !equalRecord(rec, want1) {
		t.Fatalf("record %+v\nwant %+v", rec, want1)
	}
	h.dec.mu.Lock()
	in := h.dec.seen[0]
	h.dec.mu.Unlock()
	if in.Binary.Path != "/usr/bin/curl" || in.Host != "echo.test" || in.Port != port || len(in.Ancestors) != 1 {
		t.Fatalf("decider input %+v", in)
	}
}

func equalRecord(a, b declog.Record) bool {
	return reflect.DeepEqual(a, b)
}

func TestConnectIPv6Literal(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			io.WriteString(c, "v6!")
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).AddrPort().Port()
	h := start(t, nil)
	h.dec.set(fmt.Sprintf("[::1]:%d", port), allowed("v6"))
	resp, _, br := h.roundTrip(t, connectReq(fmt.Sprintf("[::1]:%d", port)))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if b, _ := io.ReadAll(br); string(b) != "v6!" {
		t.Fatalf("got %q", b)
	}
	if rec := h.sink.last(t, 1); rec.Host != "::1" || rec.Address != "::1" {
		t.Fatalf("record %+v", rec)
	}
}

func TestConnectDenyBody(t *testing.T) {
	h := start(t, nil)
	c := h.dial(t)
	io.WriteString(c, connectReq("example.com:443"))
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"error":"policy_denied","policy":"","detail":"endpoint example.com:443 not in policy 'web'"}`
	want := "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: " +
		fmt.Sprint(len(body)) + "\r\nConnection: close\r\n\r\n" + body
	if string(raw) != want {
		t.Fatalf("response\n%q\nwant\n%q", raw, want)
	}
	rec := h.sink.last(t, 1)
	if rec.Action != "deny" || rec.Engine != "opa" || rec.Host != "example.com" || rec.Port != 443 ||
		rec.Reason != "endpoint example.com:443 not in policy 'web'" || rec.Binary != "/usr/bin/curl" || rec.Address != "" {
		t.Fatalf("record %+v", rec)
	}
}

func TestDenyNamesPolicy(t *testing.T) {
	h := start(t, nil)
	h.dec.set("api.example.test:443", policy.Decision{Action: policy.Deny, Policy: "github",
		Reason: "binary '/usr/bin/curl' not allowed in policy 'github'"})
	resp, body, _ := h.roundTrip(t, connectReq("API.Example.Test:443"))
	var got errorBody
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/json" ||
		got != (errorBody{Error: "policy_denied", Policy: "github", Detail: "binary '/usr/bin/curl' not allowed in policy 'github'"}) {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestDeciderErrorDenies(t *testing.T) {
	h := start(t, nil)
	h.dec.err = errors.New("engine exploded")
	resp, body, _ := h.roundTrip(t, connectReq("example.com:443"))
	if resp.StatusCode != 403 || !strings.Contains(body, "policy evaluation failed: engine exploded") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestHeadTooLarge(t *testing.T) {
	h := start(t, nil)
	raw := "CONNECT example.com:443 HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", 9000) + "\r\n\r\n"
	resp, _, _ := h.roundTrip(t, raw)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if len(h.sink.all()) != 0 {
		t.Fatal("a rejected head was decided")
	}
}

func TestBadRequests(t *testing.T) {
	h := start(t, nil)
	for _, raw := range []string{
		"CONNECT example.com HTTP/1.1\r\n\r\n",
		"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
		"CONNECT example.com:65536 HTTP/1.1\r\n\r\n",
		"CONNECT example.com:+443 HTTP/1.1\r\n\r\n",
		"CONNECT example.com:https HTTP/1.1\r\n\r\n",
		"CONNECT :443 HTTP/1.1\r\n\r\n",
		"CONNECT [::1 HTTP/1.1\r\n\r\n",
		"CONNECT [example.com]:443 HTTP/1.1\r\n\r\n",
		"CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n",
		"CONNECT exa$mple.com:443 HTTP/1.1\r\n\r\n",
		"CONNECT /path HTTP/1.1\r\n\r\n",
		"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"GET * HTTP/1.1\r\n\r\n",
		"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
		"GET http:///nohost HTTP/1.1\r\n\r\n",
		"GET http://exa%20mple.com/ HTTP/1.1\r\n\r\n",
		"GET http://example.com:99999/ HTTP/1.1\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
	} {
		resp, _, _ := h.roundTrip(t, raw)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 400", raw, resp.StatusCode)
		}
	}
	if len(h.sink.all()) != 0 {
		t.Fatalf("bad requests were decided: %v", h.sink.all())
	}
}

func TestParseTarget(t *testing.T) {
	good := map[string]struct {
		host string
		port uint16
	}{
		"example.com:443":    {"example.com", 443},
		"EXAMPLE.com:1":      {"example.com", 1},
		"example.com.:443":   {"example.com.", 443},
		"10.0.0.1:65535":     {"10.0.0.1", 65535},
		"[::1]:443":          {"::1", 443},
		"[2001:DB8::1]:80":   {"2001:db8::1", 80},
		"[::ffff:1.2.3.4]:8": {"::ffff:1.2.3.4", 8},
		"_srv.example:53":    {"_srv.example", 53},
	}
	for in, want := range good {
		host, port, err := parseTarget(in)
		if err != nil || host != want.host || port != want.port {
			t.Errorf("parseTarget(%q) = %q, %d, %v", in, host, port, err)
		}
	}
	for _, in := range []string{"", "example.com", "example.com:", "example.com:0", "example.com:00443x", "::1:443",
		"[::1]", "[1.2.3.4]:80", "a..b:80", "a b:80", strings.Repeat("a", 64) + ".com:80", "example.com:-1", "[::1%lo]:80"} {
		if host, port, err := parseTarget(in); err == nil {
			t.Errorf("parseTarget(%q) = %q, %d; want error", in, host, port)
		}
	}
}

func TestUpstreamRefused(t *testing.T) {
	port := closedPort(t)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("echo"))
	resp, body, _ := h.roundTrip(t, connectReq(target))
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got errorBody
	json.Unmarshal([]byte(body), &got)
	if got.Error != "upstream_unreachable" || got.Policy != "echo" || !strings.Contains(got.Detail, "connection refused") {
		t.Fatalf("body %q", body)
	}
	rec := h.sink.last(t, 1)
	if rec.Action != "allow" || !strings.HasPrefix(rec.Reason, "upstream unreachable: dial 127.0.0.1:") {
		t.Fatalf("record %+v", rec)
	}
}

func TestResolveFailure(t *testing.T) {
	h := start(t, nil)
	h.dec.set("nowhere.test:443", allowed("web"))
	resp, body, _ := h.roundTrip(t, connectReq("nowhere.test:443"))
	if resp.StatusCode != 403 || !strings.Contains(body, `"error":"ssrf_denied"`) || !strings.Contains(body, "DNS resolution failed for nowhere.test") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestIdentityFailure(t *testing.T) {
	tests := []struct {
		err    error
		detail string
	}{
		{errors.New("no process owns socket inode 1234"), "failed to resolve peer binary: no process owns socket inode 1234"},
		{fmt.Errorf("identify: %w", &identity.IntegrityError{Path: "/sandbox/bin/mycurl", Old: "aa", New: "bb"}),
			"binary integrity check failed: /sandbox/bin/mycurl hash changed from aa to bb"},
	}
	for _, tt := range tests {
		h := start(t, func(c *Config) {
			c.Identify = func(context.Context, netip.AddrPort, netip.AddrPort) (*identity.Process, error) { return nil, tt.err }
		})
		h.dec.set("example.com:443", allowed("web"))
		resp, body, _ := h.roundTrip(t, connectReq("example.com:443"))
		want := fmt.Sprintf(`{"error":"policy_denied","policy":"","detail":%q}`, tt.detail)
		if resp.StatusCode != 403 || body != want {
			t.Fatalf("%d %q, want %q", resp.StatusCode, body, want)
		}
		rec := h.sink.last(t, 1)
		if rec.Action != "deny" || rec.Engine != "identity" || rec.Reason != tt.detail || rec.Binary != "" {
			t.Fatalf("record %+v", rec)
		}
		if len(h.dec.seen) != 0 {
			t.Fatal("decided without an identity")
		}
	}
}

func TestIdentifyGetsAddresses(t *testing.T) {
	got := make(chan [2]netip.AddrPort, 1)
	h := start(t, func(c *Config) {
		c.Identify = func(_ context.Context, client, local netip.AddrPort) (*identity.Process, error) {
			got <- [2]netip.AddrPort{client, local}
			return curl, nil
		}
	})
	c := h.dial(t)
	io.WriteString(c, connectReq("example.com:443"))
	io.ReadAll(c)
	ap := <-got
	if ap[0] != c.LocalAddr().(*net.TCPAddr).AddrPort() || ap[1].String() != h.addr {
		t.Fatalf("Identify(%v, %v); client %v proxy %v", ap[0], ap[1], c.LocalAddr(), h.addr)
	}
}

func TestRealGuardRefusesInternal(t *testing.T) {
	guard := &ssrf.Guard{}
	h := start(t, func(c *Config) {
		c.Check = guard.Check
		c.Resolve = testResolve(map[string][]netip.Addr{
			"db.internal": {netip.MustParseAddr("10.0.0.5")},
			"echo.test":   {netip.MustParseAddr("127.0.0.1")},
		})
	})
	_, port := echoServer(t)
	loop := fmt.Sprintf("127.0.0.1:%d", port)
	h.dec.set(loop, allowed("loop"))
	h.dec.set("169.254.169.254:80", allowed("meta"))
	h.dec.set("db.internal:5432", allowed("db"))
	h.dec.set(fmt.Sprintf("echo.test:%d", port), policy.Decision{Action: policy.Allow, Policy: "ips",
		AllowedIPs: []string{"127.0.0.0/8"}})
	h.dec.set("10.0.0.1:6443", policy.Decision{Action: policy.Allow, Policy: "k8s", AllowedIPs: []string{"10.0.0.0/8"}})
	tests := []struct{ target, detail string }{
		{loop, "127.0.0.1 resolves to internal address 127.0.0.1, connection rejected"},
		{"169.254.169.254:80", "169.254.169.254 resolves to internal address 169.254.169.254, connection rejected"},
		{"db.internal:5432", "db.internal resolves to internal address 10.0.0.5, connection rejected"},
		{fmt.Sprintf("echo.test:%d", port), "echo.test resolves to always-blocked loopback address 127.0.0.1, connection rejected"},
		{"10.0.0.1:6443", "port 6443 is always blocked"},
	}
	for i, tt := range tests {
		resp, body, _ := h.roundTrip(t, connectReq(tt.target))
		var got errorBody
		json.Unmarshal([]byte(body), &got)
		if resp.StatusCode != 403 || got.Error != "ssrf_denied" || got.Detail != tt.detail {
			t.Errorf("%s: %d %q", tt.target, resp.StatusCode, body)
		}
		rec := h.sink.last(t, i+1)
		if rec.Action != "deny" || rec.Engine != "ssrf" || rec.Reason != tt.detail || rec.Policy == "" {
			t.Errorf("%s: record %+v", tt.target, rec)
		}
	}
	// The forward proxy takes the same path.
	resp, body, _ := h.roundTrip(t, "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
	if resp.StatusCode != 403 || !strings.Contains(body, `"error":"ssrf_denied"`) {
		t.Fatalf("forward metadata: %d %q", resp.StatusCode, body)
	}
}
