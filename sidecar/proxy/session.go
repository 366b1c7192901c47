package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/declog"
	"github.com/moatsandbox/moat/sidecar/identity"
)

// session is one client connection.
type session struct {
	s      *Server
	client net.Conn

	mu       sync.Mutex
	closed   bool
	upstream net.Conn
	flow     *flow // set once connected upstream, for Recheck
}

// flow is an established connection as Recheck sees it.
type flow struct {
	proc *identity.Process
	addr netip.Addr    // the dialled address
	rec  declog.Record // the allow record (host, port, binary, ...)
}

// close closes both connections; safe to call more than once.
func (se *session) close() {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.closed {
		return
	}
	se.closed = true
	se.client.Close()
	if se.upstream != nil {
		se.upstream.Close()
	}
}

// attach records the upstream connection and flow; false (and the
// connection closed) when the session was closed meanwhile.
func (se *session) attach(up net.Conn, f *flow) bool {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.closed {
		up.Close()
		return false
	}
	se.upstream, se.flow = up, f
	return true
}

func (se *session) currentFlow() *flow {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.closed {
		return nil
	}
	return se.flow
}

var errHeadTooLarge = errors.New("request head too large")

// serve reads one request head and hands it to CONNECT or the forward
// proxy.
func (se *session) serve() {
	c := se.client
	c.SetReadDeadline(time.Now().Add(headTimeout))
	buf := make([]byte, maxHead)
	n, end, err := readHead(c, buf)
	if errors.Is(err, errHeadTooLarge) {
		se.refuseText(http.StatusRequestHeaderFieldsTooLarge, "request head exceeds 8192 bytes")
		return
	}
	if err != nil {
		return // the client went away or stalled before finishing a head
	}
	c.SetReadDeadline(time.Time{})
	hr := bytes.NewReader(buf[:n])
	br := bufio.NewReader(io.MultiReader(hr, c))
	req, err := http.ReadRequest(br)
	if err != nil || br.Buffered()+hr.Len() != n-end {
		se.refuseText(http.StatusBadRequest, "malformed request")
		return
	}
	if req.Method == http.MethodConnect {
		se.connect(req, buf[end:n])
		return
	}
	se.forward(req, br)
}

// readHead reads until the blank line that ends a request head, at most
// len(buf) bytes. It returns the bytes read and where the head ends; the
// bytes after it are the start of the body or tunnel data.
func readHead(r io.Reader, buf []byte) (n, end int, err error) {
	for {
		if n == len(buf) {
			return n, 0, errHeadTooLarge
		}
		m, err := r.Read(buf[n:])
		from := max(0, n-3)
		n += m
		if i := headEnd(buf[from:n]); i >= 0 {
			return n, from + i, nil
		}
		if err != nil {
			return n, 0, err
		}
	}
}

// headEnd returns the index just past the first empty line (CRLF or LF
// line ends), or -1.
func headEnd(b []byte) int {
	end := -1
	if i := bytes.Index(b, []byte("\n\r\n")); i >= 0 {
		end = i + 3
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 && (end < 0 || i+2 < end) {
		end = i + 2
	}
	return end
}

// parseTarget splits a host:port authority. The host is returned lower
// case, without brackets; it must be a host name or an IP literal (IPv6
// in brackets), and the port 1-65535.
func parseTarget(authority string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(authority)
	if err != nil {
		return "", 0, fmt.Errorf("invalid target %q: %w", authority, err)
	}
	if len(ps) == 0 || len(ps) > 5 || strings.Trim(ps, "0123456789") != "" {
		return "", 0, fmt.Errorf("invalid port in %q", authority)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("invalid port in %q", authority)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.Is6() != strings.HasPrefix(authority, "[") {
			return "", 0, fmt.Errorf("invalid IP literal in %q", authority)
		}
		return a.String(), uint16(port), nil
	}
	if strings.HasPrefix(authority, "[") || !validHost(host) {
		return "", 0, fmt.Errorf("invalid host in %q", authority)
	}
	return strings.ToLower(host), uint16(port), nil
}

// validHost accepts DNS host names: labels of letters, digits, hyphens
// and underscores, 253 characters at most, an optional trailing dot.
func validHost(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
				return false
			}
		}
	}
	return true
}

// authorize identifies the caller and asks the policy about host:port.
// On a refusal it has answered the client and logged the record, and
// returns ok false. rec carries the destination in; the caller's identity
// and the policy key are added to it.
func (se *session) authorize(ctx context.Context, rec *declog.Record) (*identity.Process, policy.Decision, bool) {
	proc, err := se.s.cfg.Identify(ctx, addrPortOf(se.client.RemoteAddr()), addrPortOf(se.client.LocalAddr()))
	if err == nil && proc == nil {
		err = errors.New("no process found")
	}
	if err != nil {
		var ie *identity.IntegrityError
		reason := fmt.Sprintf("failed to resolve peer binary: %v", err)
		if errors.As(err, &ie) {
			reason = ie.Error()
		}
		se.deny(rec, declog.EngineIdentity, http.StatusForbidden, errorBody{Error: "policy_denied", Detail: reason})
		return nil, policy.Decision{}, false
	}
	rec.Binary, rec.PID, rec.Ancestors = proc.Exe.Path, proc.PID, proc.AncestorPaths()
	dec, err := se.s.cfg.Decider.Decide(ctx, proc.Input(rec.Host, rec.Port))
	if err != nil {
		dec = policy.Decision{Action: policy.Deny, Policy: dec.Policy, Engine: dec.Engine,
			Reason: "policy evaluation failed: " + err.Error()}
	}
	rec.Policy = dec.Policy
	if !dec.Allowed() {
		se.deny(rec, engineOf(dec), http.StatusForbidden, errorBody{Error: "policy_denied", Policy: dec.Policy, Detail: dec.Reason})
		return nil, dec, false
	}
	return proc, dec, true
}

// dialChecked resolves the destination the way the container would, runs
// the SSRF guard over every address and dials the address it returns.
// rec holds the allow (or audit) record so far. Refusals are answered and
// logged; a dial failure is answered with 502 and logged as the allow it
// was, with the error as its reason. On success the caller logs rec.
func (se *session) dialChecked(ctx context.Context, rec *declog.Record, resolveHost string, dec policy.Decision) (net.Conn, netip.Addr, bool) {
	s := se.s
	addrs, err := s.cfg.Resolve(ctx, resolveHost)
	if err != nil {
		se.deny(rec, declog.EngineSSRF, http.StatusForbidden, errorBody{Error: "ssrf_denied", Policy: dec.Policy,
			Detail: fmt.Sprintf("DNS resolution failed for %s: %v", rec.Host, err)})
		return nil, netip.Addr{}, false
	}
	addr, err := s.cfg.Check(rec.Host, rec.Port, addrs, dec.AllowedIPs)
	if err != nil {
		se.deny(rec, declog.EngineSSRF, http.StatusForbidden, errorBody{Error: "ssrf_denied", Policy: dec.Policy, Detail: err.Error()})
		return nil, netip.Addr{}, false
	}
	rec.Address = addr.String()
	target := netip.AddrPortFrom(addr, rec.Port).String()
	up, err := s.dial(ctx, "tcp", target)
	if err != nil {
		err = fmt.Errorf("dial %s: %w", target, err)
		rec.Reason = "upstream unreachable: " + err.Error()
		rec.Time = time.Now()
		s.emit(*rec)
		se.refuseJSON(http.StatusBadGateway, errorBody{Error: "upstream_unreachable", Policy: dec.Policy, Detail: err.Error()})
		return nil, netip.Addr{}, false
	}
	return up, addr, true
}

// deny logs a refusal and answers it.
func (se *session) deny(rec *declog.Record, engine string, status int, body errorBody) {
	rec.Time = time.Now()
	rec.Action, rec.Engine, rec.Reason = declog.ActionDeny, engine, body.Detail
	se.s.emit(*rec)
	se.refuseJSON(status, body)
}

// errorBody is the JSON body of every refusal.
type errorBody struct {
	Error  string `json:"error"`
	Policy string `json:"policy"`
	Rule   string `json:"rule,omitempty"`
	Detail string `json:"detail"`
}

func (se *session) refuseJSON(status int, body errorBody) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(body) // cannot fail for a struct of strings
	se.respond(status, "application/json", bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

func (se *session) refuseText(status int, text string) {
	se.respond(status, "text/plain; charset=utf-8", []byte(text))
}

// respond writes a complete error response and closes the connection
// gracefully: unread request bytes are drained for a moment first, so the
// kernel does not answer them with a reset that could destroy the
// response before the client reads it.
func (se *session) respond(status int, contentType string, body []byte) {
	c := se.client
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), contentType, len(body))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := (&net.Buffers{[]byte(head), body}).WriteTo(c); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c, 256<<10)
}

// addrPortOf converts a connection address; IPv4-mapped addresses are
// unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if t, ok := a.(*net.TCPAddr); ok {
		ap = t.AddrPort()
	} else if a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
