package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/control"
	"github.com/moatsandbox/moat/sidecar/declog"
)

// startControl serves the control socket (owner-only: moat runs as root).
func (s *Sidecar) startControl() error {
	_ = os.Remove(s.cfg.Socket)
	l, err := net.Listen("unix", s.cfg.Socket)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(s.cfg.Socket, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	s.onClose(func() error { err := l.Close(); _ = os.Remove(s.cfg.Socket); return err })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.control(c)
		}
	}()
	return nil
}

func (s *Sidecar) control(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(control.Timeout))
	var req control.Request
	if err := json.NewDecoder(io.LimitReader(c, control.MaxMessage)).Decode(&req); err != nil {
		_ = json.NewEncoder(c).Encode(control.Response{Error: "bad request: " + err.Error()})
		return
	}
	resp := s.handle(req)
	_ = json.NewEncoder(c).Encode(resp)
}

func (s *Sidecar) handle(req control.Request) control.Response {
	switch req.Op {
	case control.OpStatus, control.OpShow:
		s.mu.Lock()
		defer s.mu.Unlock()
		return control.Response{OK: true, Policy: s.doc, Source: s.source, Revision: s.engine.Revision(), PID: os.Getpid()}
	case control.OpApply:
		return s.apply(req)
	}
	return control.Response{Error: fmt.Sprintf("unknown operation %q", req.Op)}
}

// apply swaps the network policy: an invalid document is refused and the
// old policy stays; tunnels the new policy no longer allows are closed.
func (s *Sidecar) apply(req control.Request) control.Response {
	name := req.Name
	if name == "" {
		name = "policy"
	}
	pol, warnings, err := policy.Parse(name, []byte(req.Policy))
	if err != nil {
		return control.Response{Error: err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), control.Timeout)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.engine.Load(ctx, pol); err != nil {
		return control.Response{Error: "the policy in force is unchanged: " + err.Error()}
	}
	s.doc, s.source = req.Policy, name
	resp := control.Response{OK: true, Policy: s.doc, Source: name, Revision: s.engine.Revision(), PID: os.Getpid()}
	for _, w := range warnings {
		resp.Warnings = append(resp.Warnings, w.String())
	}
	resp.Closed = s.proxy.Recheck(ctx)
	s.logger.Info("policy applied", "source", name, "revision", resp.Revision, "closed_tunnels", resp.Closed)
	return resp
}

// startInbound listens on every forwarded port in the outer netns (all its
// addresses, 127.0.0.1 included) and relays each connection into the
// sandbox, logging it.
func (s *Sidecar) startInbound() error {
	for _, f := range s.cfg.Inbound {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", f.Port))
		if err != nil {
			return fmt.Errorf("inbound port %d: %w", f.Port, err)
		}
		s.onClose(l.Close)
		go s.forward(l, f)
	}
	return nil
}

func (s *Sidecar) forward(l net.Listener, f control.Forward) {
	for {
		c, err := l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.logger.Warn("inbound listener stopped", "port", f.Port, "err", err)
			}
			return
		}
		go s.relayInbound(c, f)
	}
}

func (s *Sidecar) relayInbound(c net.Conn, f control.Forward) {
	defer c.Close()
	rec := declog.Record{Sandbox: s.cfg.Sandbox, Action: declog.ActionAllow, Engine: declog.EngineInbound, Protocol: "tcp", Port: f.Port}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		rec.Host = ap.Addr().Unmap().String()
	}
	up, err := net.DialTimeout("tcp", f.Target, 10*time.Second)
	if err != nil {
		rec.Action, rec.Reason = declog.ActionDeny, "inbound: "+err.Error()
		s.log.Log(rec)
		return
	}
	defer up.Close()
	rec.Reason = fmt.Sprintf("inbound port %d forwarded to %s", f.Port, f.Target)
	s.log.Log(rec)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}
