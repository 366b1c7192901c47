// Package sidecar assembles moat's per-sandbox supervisor: the egress
// proxy (sidecar/proxy) deciding with the OPA engine by destination and by
// the calling binary (sidecar/identity), the SSRF guard (sidecar/ssrf), the
// container-like resolver (sidecar/resolve), the decision log
// (sidecar/declog), the bypass monitor (sidecar/bypass), inbound port
// forwarders and the control socket (sidecar/control). cmd/moat-sidecar
// runs it inside the sandbox's outer network namespace.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/policy/engine"
	"github.com/moatsandbox/moat/sidecar/bypass"
	"github.com/moatsandbox/moat/sidecar/control"
	"github.com/moatsandbox/moat/sidecar/declog"
	"github.com/moatsandbox/moat/sidecar/identity"
	"github.com/moatsandbox/moat/sidecar/proxy"
	"github.com/moatsandbox/moat/sidecar/resolve"
	"github.com/moatsandbox/moat/sidecar/ssrf"
)

// Sidecar is one running supervisor.
type Sidecar struct {
	cfg    *control.Config
	logger *slog.Logger
	engine *engine.Engine
	log    *declog.Writer
	ids    *identity.Resolver
	proxy  *proxy.Server

	mu     sync.Mutex
	doc    string // the policy document in force
	source string

	closers []func() error // in setup order; closed in reverse
}

// Start sets the sidecar up: every listener is bound when it returns, so
// the caller can report readiness. On error nothing is left open.
func Start(ctx context.Context, cfg *control.Config, logger *slog.Logger) (_ *Sidecar, retErr error) {
	s := &Sidecar{cfg: cfg, logger: logger, source: cfg.PolicySource}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	pol := policy.DefaultPolicy()
	if cfg.PolicyFile != "" {
		data, err := os.ReadFile(cfg.PolicyFile)
		if err != nil {
			return nil, fmt.Errorf("read policy: %w", err)
		}
		if pol, _, err = policy.Parse(cfg.PolicyFile, data); err != nil {
			return nil, err
		}
		s.doc = string(data)
	}
	var err error
	if s.engine, err = engine.New(pol); err != nil {
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	if s.log, err = declog.Open(cfg.LogDir, cfg.LogMaxBytes, cfg.LogMaxFiles); err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	s.onClose(s.log.Close)
	if s.ids, err = identity.New(identity.Config{InnerNetNS: cfg.InnerNetNS}); err != nil {
		return nil, fmt.Errorf("binary identity: %w", err)
	}
	s.onClose(s.ids.Close)
	res, err := resolve.New(cfg.ResolvConf, cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	local, err := watchLocalAddrs(logger)
	if err != nil {
		return nil, err
	}
	s.onClose(local.Close)
	guard := &ssrf.Guard{LocalAddrs: local.Addrs}
	if s.proxy, err = proxy.New(proxy.Config{
		Sandbox:  cfg.Sandbox,
		Decider:  s.engine,
		Identify: s.ids.Lookup,
		Resolve:  res.LookupNetIP,
		Check:    guard.Check,
		Log:      s.log,
		Logger:   logger,
	}); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	s.onClose(s.proxy.Close)
	// No keepalive probes on the proxy's side of a client connection:
	// its peer is a sandbox process across the veth, whose sockets the
	// kernel closes when it dies, and the probes' options cost four
	// system calls per connection. Upstream connections keep Go's
	// default, for long idle tunnels through NATs.
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(ctx, "tcp", cfg.Proxy)
	if err != nil {
		return nil, fmt.Errorf("proxy listener: %w", err)
	}
	go func() {
		if err := s.proxy.Serve(l); err != nil {
			logger.Error("proxy stopped", "err", err)
		}
	}()
	if err := s.startInbound(); err != nil {
		return nil, err
	}
	if err := s.startControl(); err != nil {
		return nil, err
	}
	s.startBypass(ctx)
	return s, nil
}

func (s *Sidecar) onClose(f func() error) { s.closers = append(s.closers, f) }

// Close stops everything the sidecar started.
func (s *Sidecar) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// bypassLookupTimeout bounds the identity lookup of a queued SYN: its
// connect(2) waits for the lookup before it is refused.
const bypassLookupTimeout = 250 * time.Millisecond

// startBypass logs the bypass attempts of the inner netns: new TCP
// connections and UDP datagrams from its NFQUEUE, named by the calling
// binary while their socket still exists (pings too), everything else
// from its NFLOG group.
// The NFLOG refusal itself is the kernel's, so a monitor that cannot
// start only costs log lines. Without a queue reader the kernel drops the
// queued SYNs: direct TCP connections time out instead of being refused
// at once, which is still closed, so that too is a warning, not a failed
// sandbox.
func (s *Sidecar) startBypass(ctx context.Context) {
	if s.cfg.NFLogGroup != 0 {
		m, err := bypass.Open(s.cfg.InnerNetNS, s.cfg.NFLogGroup)
		if err != nil {
			s.logger.Warn("bypass monitor unavailable; refused direct connections are not logged", "err", err)
		} else {
			s.onClose(m.Close)
			go func() {
				_ = m.Run(ctx, func(ev bypass.Event) { s.logBypass(ev, nil) })
			}()
		}
	}
	if s.cfg.NFQueue == 0 {
		return
	}
	q, err := bypass.OpenQueue(s.cfg.InnerNetNS, s.cfg.NFQueue)
	if err != nil {
		s.logger.Warn("bypass queue unavailable; direct TCP connections and UDP datagrams time out instead of being refused, unlogged", "err", err)
		return
	}
	s.onClose(q.Close)
	go func() {
		if err := q.Run(ctx, s.logQueued); err != nil && !errors.Is(err, context.Canceled) {
			s.logger.Error("bypass queue stopped; direct TCP connections and UDP datagrams now time out instead of being refused", "err", err)
		}
	}()
}

// logQueued logs a queued packet with the process that sent it: a TCP
// SYN's socket is still in SYN_SENT, so sock_diag finds it by the exact
// tuple; a UDP datagram's socket is found by its local address and a
// ping's by its identifier, if the sender has not closed it yet (a
// resolver or a ping waiting for its answer has not).
func (s *Sidecar) logQueued(ev bypass.Event) {
	lookup := s.ids.Lookup
	switch {
	case ev.Protocol == "udp":
		lookup = s.ids.LookupUDP
	case ev.Echo:
		lookup = func(ctx context.Context, src, _ netip.AddrPort) (*identity.Process, error) {
			return s.ids.LookupICMP(ctx, src.Addr(), ev.EchoID)
		}
	}
	var proc *identity.Process
	if ev.Src.IsValid() && ev.Dst.IsValid() {
		ctx, cancel := context.WithTimeout(context.Background(), bypassLookupTimeout)
		p, err := lookup(ctx, ev.Src, ev.Dst)
		cancel()
		if err == nil {
			proc = p
		} else {
			s.logger.Debug("bypass: no process for a queued packet", "protocol", ev.Protocol, "src", ev.Src, "dst", ev.Dst, "err", err)
		}
	}
	s.logBypass(ev, proc)
}

// logBypass writes the decision log record of a refused direct
// connection, naming proc when it is known. Packets from NFLOG come
// without one: the kernel refused them before the monitor read them, so
// their sockets may be gone (TCP connections, UDP datagrams and pings are
// named by the queue).
func (s *Sidecar) logBypass(ev bypass.Event, proc *identity.Process) {
	rec := declog.Record{
		Time:     ev.Time,
		Sandbox:  s.cfg.Sandbox,
		Action:   declog.ActionReject,
		Engine:   declog.EngineBypass,
		Protocol: ev.Protocol,
		Host:     ev.Dst.Addr().String(),
		Port:     ev.Dst.Port(),
		Reason:   bypassReason(ev),
	}
	if proc != nil {
		rec.Binary, rec.PID, rec.Ancestors = proc.Exe.Path, proc.PID, proc.AncestorPaths()
	}
	s.log.Log(rec)
}

// bypassReason words a refused direct connection with the hint OpenShell
// gives for it.
func bypassReason(ev bypass.Event) string {
	const base = "direct connection bypassed the sandbox proxy"
	switch {
	case ev.Protocol == "udp" && ev.Dst.Port() == 53:
		return base + "; DNS queries must go through the proxy (it resolves names itself)"
	case ev.Protocol == "udp":
		return base + "; UDP traffic must go through the proxy"
	case ev.Protocol == "tcp":
		return base + "; make the program honour HTTP_PROXY/HTTPS_PROXY (Node.js: NODE_USE_ENV_PROXY=1)"
	}
	return base
}
