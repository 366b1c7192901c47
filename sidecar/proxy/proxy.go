// Package proxy is the sidecar's per-sandbox egress proxy: the only way
// out of the sandbox's inner network namespace.
//
// It serves HTTP CONNECT tunnels and plain-HTTP forward-proxy requests
// (absolute-form `http://` URIs). For each, it identifies the calling
// process from its socket, asks the policy whether that binary may reach
// host:port, resolves the name as the container would, runs the SSRF
// guard over every resolved address with the policy's allowed_ips, dials
// the checked address (never resolving again) and relays. Every decision
// becomes one decision-log record; every refusal is an HTTP error the
// agent can read, with a JSON body naming the policy and the reason.
//
// Tunnels relay bytes untouched with io.Copy between the two TCP
// connections (splice on Linux). The forward proxy handles one request per
// client connection, as OpenShell does: the request is rewritten to origin
// form and sent with `Connection: close`, the response is relayed with
// `Connection: close`, and then both connections close. A keep-alive loop
// would need a new identity and policy decision per request anyway, and
// clients reopen connections without complaint; relaying exactly one
// framed request also means nothing a client pipelines after it can reach
// the upstream unchecked.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/sidecar/declog"
	"github.com/moatsandbox/moat/sidecar/identity"
)

// Limits.
const (
	maxHead     = 8192             // request head, as OpenShell reads it
	dialTimeout = 10 * time.Second // the default dialer's
)

// headTimeout bounds the wait for a whole request head (a variable for
// tests).
var headTimeout = 30 * time.Second

// Config is what a Server needs. Decider, Identify, Resolve and Check are
// required.
type Config struct {
	Sandbox  string // sandbox id, for records
	Decider  policy.Decider
	Identify func(ctx context.Context, client, local netip.AddrPort) (*identity.Process, error)
	Resolve  func(ctx context.Context, host string) ([]netip.Addr, error)
	// Check is the SSRF guard: it returns the address to dial or refuses.
	Check func(host string, port uint16, addrs []netip.Addr, allowedIPs []string) (netip.Addr, error)
	Log   declog.Sink // nil discards records
	// Dial connects to the checked upstream address; nil uses a
	// net.Dialer with a 10 s timeout.
	Dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger *slog.Logger // nil discards
}

// Server is one sandbox's proxy. It may serve several listeners.
type Server struct {
	cfg    Config
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup // one per session
}

// New checks cfg and returns a server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Decider == nil:
		return nil, errors.New("proxy: no Decider")
	case cfg.Identify == nil:
		return nil, errors.New("proxy: no Identify")
	case cfg.Resolve == nil:
		return nil, errors.New("proxy: no Resolve")
	case cfg.Check == nil:
		return nil, errors.New("proxy: no SSRF Check")
	}
	s := &Server{cfg: cfg, dial: cfg.Dial, log: cfg.Logger,
		listeners: make(map[net.Listener]struct{}), sessions: make(map[*session]struct{})}
	if s.dial == nil {
		s.dial = (&net.Dialer{Timeout: dialTimeout}).DialContext
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Serve accepts connections on l until Close, then returns nil. Other
// accept errors that are not transient are returned.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", l.Addr(), err)
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
			}
			continue
		}
		backoff = 0
		se := &session{s: s, client: c}
		if !s.track(se) {
			c.Close()
			return nil
		}
		go func() {
			defer s.untrack(se)
			se.serve()
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers a new session; false once the server is closed.
func (s *Server) track(se *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[se] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(se *session) {
	se.close()
	s.mu.Lock()
	delete(s.sessions, se)
	s.mu.Unlock()
	s.wg.Done()
}

// Close stops every listener, closes every open connection and tunnel,
// and waits for their goroutines to finish.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for l := range s.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close listener %s: %w", l.Addr(), err))
		}
	}
	sessions := make([]*session, 0, len(s.sessions))
	for se := range s.sessions {
		sessions = append(sessions, se)
	}
	s.mu.Unlock()
	for _, se := range sessions {
		se.close()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Recheck decides every open tunnel and forwarded request again with the
// current Decider (after a policy hot swap), together with the SSRF
// guard over the dialled address and the new allowed_ips. Connections no
// longer allowed are closed and logged; it returns how many.
func (s *Server) Recheck(ctx context.Context) int {
	s.mu.Lock()
	open := make([]*session, 0, len(s.sessions))
	for se := range s.sessions {
		open = append(open, se)
	}
	s.mu.Unlock()
	closed := 0
	for _, se := range open {
		f := se.currentFlow()
		if f == nil {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		rec := f.rec
		rec.Time = time.Now()
		rec.Action = declog.ActionDeny
		dec, err := s.cfg.Decider.Decide(ctx, f.proc.Input(f.rec.Host, f.rec.Port))
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return closed
			}
			rec.Engine, rec.Policy = declog.EngineOPA, ""
			rec.Reason = "policy re-evaluation failed: " + err.Error()
		case !dec.Allowed():
			rec.Engine, rec.Policy = engineOf(dec), dec.Policy
			rec.Reason = dec.Reason
		default:
			if _, err := s.cfg.Check(f.rec.Host, f.rec.Port, []netip.Addr{f.addr}, dec.AllowedIPs); err == nil {
				continue
			} else {
				rec.Engine, rec.Policy = declog.EngineSSRF, dec.Policy
				rec.Reason = err.Error()
			}
		}
		rec.Reason = "closed after policy reload: " + rec.Reason
		se.close()
		s.emit(rec)
		closed++
	}
	return closed
}

// emit writes one decision record to the sink and the structured log.
func (s *Server) emit(rec declog.Record) {
	if s.cfg.Log != nil {
		s.cfg.Log.Log(rec)
	}
	level := slog.LevelInfo
	if rec.Action == declog.ActionAllow {
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "egress decision",
		"sandbox", rec.Sandbox, "action", rec.Action, "engine", rec.Engine,
		"binary", rec.Binary, "pid", rec.PID, "protocol", rec.Protocol,
		"host", rec.Host, "port", rec.Port, "address", rec.Address,
		"method", rec.Method, "path", rec.Path, "policy", rec.Policy, "reason", rec.Reason)
}

// engineOf is the record engine of a policy decision.
func engineOf(d policy.Decision) string {
	if d.Engine != "" {
		return d.Engine
	}
	return declog.EngineOPA
}
