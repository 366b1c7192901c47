package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/policy"
)

// seenRequest is what the upstream received.
type seenRequest struct {
	req   *http.Request
	body  string
	after string // bytes that arrived after the first request
}

// upstream serves one canned raw response per connection and reports the
// request it got.
func upstream(t *testing.T, response string) (uint16, <-chan seenRequest) {
	t.Helper()
	seen := make(chan seenRequest, 10)
	ap := serveConns(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("upstream read: %v", err)
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Errorf("upstream body: %v", err)
		}
		io.WriteString(c, response)
		after, _ := io.ReadAll(br) // until the proxy closes
		seen <- seenRequest{req: req, body: string(body), after: string(after)}
	})
	return ap.Port(), seen
}

func receive(t *testing.T, seen <-chan seenRequest) seenRequest {
	t.Helper()
	select {
	case s := <-seen:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("upstream saw no request")
		return seenRequest{}
	}
}

const helloResponse = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Up-Hop\r\nKeep-Alive: timeout=5\r\nX-Up-Hop: 1\r\nX-Up: 1\r\n\r\nhello"

func TestForwardGetRewritten(t *testing.T) {
	port, seen := upstream(t, helloResponse)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("web"))
	raw := fmt.Sprintf("GET http://%s/path/x?q=1&r=%%2F HTTP/1.1\r\nHost: spoofed.example\r\n"+
		"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n"+
		"Connection: X-Hop\r\nX-Hop: drop me\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: websocket\r\n"+
		"Via: 1.0 client-side\r\nX-Keep: yes\r\n\r\n"+
		"GET http://%s/smuggled HTTP/1.1\r\nHost: %s\r\n\r\n", target, target, target)
	resp, body, _ := h.roundTrip(t, raw)
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if !resp.Close || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Up-Hop") != "" ||
		resp.Header.Get("X-Up") != "1" || resp.Header.Get("Via") != via {
		t.Fatalf("response headers %v (close %v)", resp.Header, resp.Close)
	}
	s := receive(t, seen)
	r := s.req
	if r.RequestURI != "/path/x?q=1&r=%2F" || r.Host != target || r.Method != "GET" {
		t.Fatalf("upstream got %s %s Host %s", r.Method, r.RequestURI, r.Host)
	}
	for _, name := range []string{"Proxy-Connection", "Proxy-Authorization", "X-Hop", "Keep-Alive", "Te", "Upgrade", "User-Agent"} {
		if v, ok := r.Header[name]; ok {
			t.Errorf("upstream got %s: %v", name, v)
		}
	}
	if !r.Close || r.Header.Get("X-Keep") != "yes" || strings.Join(r.Header.Values("Via"), ", ") != "1.0 client-side, "+via {
		t.Fatalf("upstream headers %v (close %v)", r.Header, r.Close)
	}
	if s.after != "" {
		t.Fatalf("pipelined bytes reached the upstream: %q", s.after)
	}
	rec := h.sink.last(t, 1)
	if rec.Action != "allow" || rec.Engine != "opa" || rec.Protocol != "http" || rec.Method != "GET" ||
		rec.Path != "/path/x" || rec.Host != "echo.test" || rec.Address != "127.0.0.1" || rec.Policy != "web" {
		t.Fatalf("record %+v", rec)
	}
	if n := len(h.sink.all()); n != 1 {
		t.Fatalf("%d records for one request", n)
	}
}

func TestForwardBodies(t *testing.T) {
	h := start(t, nil)
	for _, tt := range []struct{ name, req, want string }{
		{"content-length", "Content-Length: 11\r\n\r\nhello world", "hello world"},
		{"chunked", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			chunked := "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n"
			port, seen := upstream(t, chunked)
			target := fmt.Sprintf("echo.test:%d", port)
			h.dec.set(target, allowed("web"))
			resp, body, _ := h.roundTrip(t, fmt.Sprintf("POST http://%s/upload HTTP/1.1\r\nHost: %s\r\n%s", target, target, tt.req))
			if resp.StatusCode != 201 || body != "abcdefg" || resp.Trailer.Get("X-Sum") != "7" {
				t.Fatalf("%d %q trailer %v", resp.StatusCode, body, resp.Trailer)
			}
			if s := receive(t, seen); s.body != tt.want || s.req.Method != "POST" {
				t.Fatalf("upstream got %s %q", s.req.Method, s.body)
			}
		})
	}
}

func TestForwardHeadAndInterim(t *testing.T) {
	h := start(t, nil)
	port, _ := upstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("web"))
	resp, body, _ := h.roundTrip(t, fmt.Sprintf("HEAD http://%s/ HTTP/1.1\r\n\r\n", target))
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 1000 {
		t.Fatalf("HEAD: %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}

	port, _ = upstream(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	target = fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("web"))
	c := h.dial(t)
	fmt.Fprintf(c, "PUT http://%s/f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", target)
	raw, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(raw), "HTTP/1.1 100 Continue\r\n") || !strings.Contains(string(raw), "HTTP/1.1 200 OK\r\n") ||
		!strings.HasSuffix(string(raw), "\r\n\r\nok") {
		t.Fatalf("got %q", raw)
	}
}

func TestForwardHTTPSRefused(t *testing.T) {
	h := start(t, nil)
	resp, body, _ := h.roundTrip(t, "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 400 || body != "Use CONNECT for HTTPS URLs" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestForwardDenied(t *testing.T) {
	h := start(t, nil)
	resp, body, _ := h.roundTrip(t, "GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n")
	want := `{"error":"policy_denied","policy":"","detail":"endpoint echo.test:80 not in policy 'web'"}`
	if resp.StatusCode != 403 || body != want || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	rec := h.sink.last(t, 1)
	if rec.Action != "deny" || rec.Port != 80 || rec.Method != "GET" || rec.Path != "/" || rec.Protocol != "http" {
		t.Fatalf("record %+v", rec)
	}
}

func TestForwardUpstreamRefused(t *testing.T) {
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", closedPort(t))
	h.dec.set(target, allowed("web"))
	resp, body, _ := h.roundTrip(t, fmt.Sprintf("GET http://%s/ HTTP/1.1\r\n\r\n", target))
	if resp.StatusCode != 502 || !strings.Contains(body, `"error":"upstream_unreachable"`) {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	// An upstream that closes without answering is a 502 too.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	target = fmt.Sprintf("echo.test:%d", l.Addr().(*net.TCPAddr).Port)
	h.dec.set(target, allowed("web"))
	resp, body, _ = h.roundTrip(t, fmt.Sprintf("GET http://%s/ HTTP/1.1\r\n\r\n", target))
	if resp.StatusCode != 502 || !strings.Contains(body, "read response") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// l7Decision is an allow whose endpoint inspects requests.
func l7Decision(enforcement string) policy.Decision {
	return policy.Decision{Action: policy.Allow, Policy: "api", Engine: "opa", Endpoint: &policy.Endpoint{
		Protocol: policy.ProtocolREST, Enforcement: enforcement,
		Rules: []policy.Rule{{Method: "GET", Path: "/v1/**"}},
	}}
}

// getV1Only decides like the rule above would.
func getV1Only(enforced bool) func(policy.Request) policy.Decision {
	return func(r policy.Request) policy.Decision {
		d := policy.Decision{Action: policy.Allow, Policy: "api", Engine: "opa"}
		if r.Method == "GET" && strings.HasPrefix(r.Path, "/v1/") {
			return d
		}
		d.Reason = policy.RequestReason(r.Method, r.Path)
		d.Action = policy.Audit
		if enforced {
			d.Action = policy.Deny
		}
		return d
	}
}

func TestForwardL7Enforce(t *testing.T) {
	port, seen := upstream(t, helloResponse)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, l7Decision(policy.Enforce))
	h.dec.l7 = getV1Only(true)

	resp, body, _ := h.roundTrip(t, fmt.Sprintf("GET http://%s/v1/a?x=1 HTTP/1.1\r\n\r\n", target))
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	receive(t, seen)
	rec := h.sink.last(t, 1)
	if rec.Action != "allow" || rec.Engine != "l7" || rec.Method != "GET" || rec.Path != "/v1/a" {
		t.Fatalf("record %+v", rec)
	}

	for _, tt := range []struct{ req, rule string }{
		{"POST http://%s/v1/x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", "POST /v1/x"},
		{"GET http://%s/v1/../admin HTTP/1.1\r\n\r\n", "GET /admin"},
		{"GET http://%s//v2//x HTTP/1.1\r\n\r\n", "GET /v2/x"},
	} {
		resp, body, _ = h.roundTrip(t, fmt.Sprintf(tt.req, target))
		want := fmt.Sprintf(`{"error":"policy_denied","policy":"api","rule":%q,"detail":"%s not permitted by policy"}`, tt.rule, tt.rule)
		if resp.StatusCode != 403 || body != want {
			t.Fatalf("%s: %d %q\nwant %q", tt.rule, resp.StatusCode, body, want)
		}
		rec = h.sink.last(t, 1)
		if rec.Action != "deny" || rec.Engine != "l7" || rec.Method+" "+rec.Path != tt.rule || rec.Address != "" {
			t.Fatalf("record %+v", rec)
		}
	}
	select {
	case s := <-seen:
		t.Fatalf("upstream saw a denied request: %s %s", s.req.Method, s.req.RequestURI)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestForwardL7Audit(t *testing.T) {
	port, seen := upstream(t, helloResponse)
	h := start(t, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, l7Decision(""))
	h.dec.l7 = getV1Only(false)
	resp, body, _ := h.roundTrip(t, fmt.Sprintf("DELETE http://%s/v1/x HTTP/1.1\r\n\r\n", target))
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if s := receive(t, seen); s.req.Method != "DELETE" {
		t.Fatalf("upstream got %s", s.req.Method)
	}
	rec := h.sink.last(t, 1)
	if rec.Action != "audit" || rec.Engine != "l7" || rec.Reason != "DELETE /v1/x not permitted by policy" || rec.Policy != "api" {
		t.Fatalf("record %+v", rec)
	}
}

func TestCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/": "/", "/a/b": "/a/b", "/a/b/": "/a/b/", "/a/../b": "/b", "//a//b": "/a/b",
		"/../../etc": "/etc", "/a/./b/.": "/a/b", "a": "/a",
	} {
		if got := canonicalPath(in); got != want {
			t.Errorf("canonicalPath(%q) = %q, want %q", in, got, want)
		}
	}
}
