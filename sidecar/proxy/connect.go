package proxy

import (
	"io"
	"net"
	"net/http"
	"time"

	"github.com/moatsandbox/moat/sidecar/declog"
)

var established = []byte("HTTP/1.1 200 Connection Established\r\n\r\n")

// connect serves a CONNECT request: decide, check, dial, answer 200 and
// relay. early holds bytes the client sent after the head, which go
// upstream first.
func (se *session) connect(req *http.Request, early []byte) {
	s := se.s
	host, port, err := parseTarget(req.RequestURI)
	if err != nil {
		se.refuseText(http.StatusBadRequest, err.Error())
		return
	}
	rec := declog.Record{Sandbox: s.cfg.Sandbox, Protocol: "connect", Host: trimDot(host), Port: port}
	proc, dec, ok := se.authorize(s.ctx, &rec)
	if !ok {
		return
	}
	rec.Action, rec.Engine, rec.Reason = string(dec.Action), engineOf(dec), dec.Reason
	up, addr, ok := se.dialChecked(s.ctx, &rec, host, dec)
	if !ok {
		return
	}
	rec.Time = time.Now()
	s.emit(rec)
	if !se.attach(up, &flow{proc: proc, addr: addr, rec: rec}) {
		return
	}
	if _, err := se.client.Write(established); err != nil {
		return
	}
	if len(early) > 0 {
		if _, err := up.Write(early); err != nil {
			return
		}
	}
	relay(se.client, up)
}

// relay copies both ways until both directions end. A clean end of one
// direction is passed on as a half-close; an error ends both.
func relay(client, upstream net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(upstream, client)
	}()
	pump(client, upstream)
	<-done
}

// pump copies src to dst; io.Copy between two *net.TCPConn splices.
func pump(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// trimDot drops the trailing dot of an absolute host name: policies and
// records name hosts without it, while resolution keeps it (an absolute
// name skips the search domains).
func trimDot(host string) string {
	if len(host) > 1 && host[len(host)-1] == '.' {
		return host[:len(host)-1]
	}
	return host
}
