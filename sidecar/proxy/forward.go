package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/declog"
)

// via is this proxy's Via entry.
const via = "1.1 moat"

// hopByHop are the headers that describe one connection, never forwarded
// (besides those the Connection header lists).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward serves one absolute-form http:// request: decide (and apply
// L7 rules), check, dial, send the request in origin form and relay the
// response. body reads the request body after the head.
func (se *session) forward(req *http.Request, body *bufio.Reader) {
	s := se.s
	u := req.URL
	switch {
	case u.Scheme == "https":
		se.refuseText(http.StatusBadRequest, "Use CONNECT for HTTPS URLs")
		return
	case u.Scheme != "http" || u.Host == "" || u.Opaque != "":
		se.refuseText(http.StatusBadRequest, "this is a proxy: send CONNECT host:port or an absolute http:// URL")
		return
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	host, p, err := parseTarget(net.JoinHostPort(u.Hostname(), port))
	if err != nil || (strings.Contains(u.Hostname(), ":") != strings.HasPrefix(u.Host, "[")) {
		se.refuseText(http.StatusBadRequest, fmt.Sprintf("invalid host in %q", u.Host))
		return
	}
	rec := declog.Record{Sandbox: s.cfg.Sandbox, Protocol: "http", Host: trimDot(host), Port: p,
		Method: req.Method, Path: canonicalPath(u.Path)}
	proc, dec, ok := se.authorize(s.ctx, &rec)
	if !ok {
		return
	}
	rec.Action, rec.Engine, rec.Reason = string(dec.Action), engineOf(dec), dec.Reason
	if ep := dec.Endpoint; ep != nil && ep.Protocol == policy.ProtocolREST && ep.HasL7() {
		in := proc.Input(rec.Host, rec.Port)
		d7, err := s.cfg.Decider.DecideRequest(s.ctx, policy.Request{Input: in, Method: req.Method, Path: rec.Path, Query: u.Query()})
		if err != nil {
			d7 = policy.Decision{Action: policy.Deny, Policy: dec.Policy, Reason: "policy evaluation failed: " + err.Error()}
		}
		if d7.Policy != "" {
			rec.Policy = d7.Policy
		}
		if !d7.Allowed() {
			detail := d7.Reason
			if detail == "" {
				detail = policy.RequestReason(req.Method, rec.Path)
			}
			se.deny(&rec, declog.EngineL7, http.StatusForbidden, errorBody{Error: "policy_denied",
				Policy: rec.Policy, Rule: req.Method + " " + rec.Path, Detail: detail})
			return
		}
		rec.Action, rec.Engine, rec.Reason = string(d7.Action), declog.EngineL7, d7.Reason
	}
	up, addr, ok := se.dialChecked(s.ctx, &rec, host, dec)
	if !ok {
		return
	}
	rec.Time = time.Now()
	s.emit(rec)
	if !se.attach(up, &flow{proc: proc, addr: addr, rec: rec}) {
		return
	}
	se.exchange(req, up, rec.Policy)
}

// canonicalPath is the path L7 rules are matched against: cleaned of
// dot segments and doubled slashes, so `/v1/../admin` is judged as the
// `/admin` the upstream will serve; a trailing slash is kept.
func canonicalPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// exchange sends the rewritten request upstream while reading the
// response, relays interim (1xx) responses and the final one, and closes
// the session.
func (se *session) exchange(req *http.Request, up net.Conn, policyKey string) {
	rewrite(req)
	wrote := make(chan error, 1)
	go func() {
		err := req.Write(up)
		if err != nil {
			// The request is incomplete (the client's body ended early):
			// give the upstream a moment to answer, no more.
			up.SetReadDeadline(time.Now().Add(10 * time.Second))
		}
		wrote <- err
	}()
	defer func() {
		se.close()
		<-wrote
	}()
	ubr := bufio.NewReader(up)
	interim := false
	for {
		resp, err := http.ReadResponse(ubr, req)
		if err != nil {
			if !interim {
				se.refuseJSON(http.StatusBadGateway, errorBody{Error: "upstream_unreachable", Policy: policyKey,
					Detail: fmt.Sprintf("read response from %s: %v", up.RemoteAddr(), err)})
			}
			return
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if writeHead(se.client, resp, false) != nil {
				return
			}
			interim = true
			continue
		}
		writeResponse(se.client, resp)
		return
	}
}

// rewrite turns a proxy request into the origin-form request the upstream
// gets: hop-by-hop and Proxy-* headers dropped, Via added, and
// Connection: close. The Host header is the URI's authority, as RFC 9112
// asks of a proxy.
func rewrite(req *http.Request) {
	dropHopByHop(req.Header)
	req.Header.Add("Via", via)
	req.Close = true
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // keeps net/http from adding its own
	}
}

// dropHopByHop removes the connection-specific headers.
func dropHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// writeHead writes a response's status line and headers (hop-by-hop ones
// removed, Via added), adding the framing headers of the relayed body.
func writeHead(w io.Writer, resp *http.Response, final bool) error {
	dropHopByHop(resp.Header)
	resp.Header.Add("Via", via)
	var b bytes.Buffer
	status := resp.Status
	if status == "" || !strings.HasPrefix(status, strconv.Itoa(resp.StatusCode)) {
		status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\n", status)
	resp.Header.Write(&b)
	if final {
		if chunkedBody(resp) {
			b.WriteString("Transfer-Encoding: chunked\r\n")
		}
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	_, err := w.Write(b.Bytes())
	return err
}

func chunkedBody(resp *http.Response) bool {
	return len(resp.TransferEncoding) > 0 && resp.Body != http.NoBody
}

// writeResponse relays the final response: chunked bodies re-chunked
// (with trailers), others as they come, each read passed on at once so
// streamed responses stay streamed.
func writeResponse(w io.Writer, resp *http.Response) error {
	defer resp.Body.Close()
	if err := writeHead(w, resp, true); err != nil {
		return err
	}
	if !chunkedBody(resp) {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			chunk := net.Buffers{[]byte(strconv.FormatInt(int64(n), 16) + "\r\n"), buf[:n], []byte("\r\n")}
			if _, werr := chunk.WriteTo(w); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err // no terminating chunk: the client sees a truncated body
		}
	}
	var b bytes.Buffer
	b.WriteString("0\r\n")
	resp.Trailer.Write(&b)
	b.WriteString("\r\n")
	_, err := w.Write(b.Bytes())
	return err
}
