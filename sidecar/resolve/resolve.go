// Package resolve resolves host names the way the sandboxed container
// would: with the container's own hosts file and resolv.conf (the files
// the engine gave it: Docker's embedded DNS, Kubernetes search domains and
// hostAliases), not the host's.
//
// Lookups read the hosts file first (names and aliases, case-insensitive),
// then ask the resolv.conf nameservers directly (port 53, UDP with a TCP
// retry on truncation), applying the container's search domains and ndots
// and sending only absolute names. A small stub resolver is used rather
// than net.Resolver, because even with PreferGo and a custom Dial the
// standard library still consults the host's /etc/hosts, nsswitch.conf
// and resolv.conf options (timeouts, attempts, the number of servers to
// try), none of which the container sees.
package resolve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Resolver resolves names with one container's resolv.conf and hosts
// file. It re-reads them when their modification time or size changes
// (checked at most once per second), so an engine rewriting resolv.conf
// is followed. It is safe for concurrent use.
type Resolver struct {
	// Dial connects to a nameserver ("udp" or "tcp", "ip:53"); nil uses a
	// net.Dialer. Set it before the first lookup.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	resolvPath, hostsPath string
	recheck               time.Duration // how often file stamps are compared

	mu        sync.Mutex // serialises reloads
	cur       atomic.Pointer[snapshot]
	lastCheck atomic.Int64 // unix nanoseconds of the last stamp comparison
	next      atomic.Uint32
}

// snapshot is what the files said when last read.
type snapshot struct {
	conf        *config
	hosts       map[string][]netip.Addr
	resolvStamp stamp
	hostsStamp  stamp
}

type stamp struct {
	mtime time.Time
	size  int64
	ok    bool
}

// New returns a resolver for the container whose resolv.conf and hosts
// file are at those paths (on the host). A missing file means no entries:
// no hosts entries, or no nameservers and default options. Other read
// errors are returned.
func New(resolvConf, hosts string) (*Resolver, error) {
	r := &Resolver{resolvPath: resolvConf, hostsPath: hosts, recheck: time.Second}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads both files now.
func (r *Resolver) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := load(r.resolvPath, r.hostsPath)
	if err != nil {
		return err
	}
	r.cur.Store(s)
	r.lastCheck.Store(time.Now().UnixNano())
	return nil
}

func load(resolvPath, hostsPath string) (*snapshot, error) {
	s := &snapshot{}
	data, st, err := readFile(resolvPath)
	if err != nil {
		return nil, err
	}
	if s.conf, err = parseResolvConf(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse %s: %w", resolvPath, err)
	}
	s.resolvStamp = st
	if data, st, err = readFile(hostsPath); err != nil {
		return nil, err
	}
	if s.hosts, err = parseHosts(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse %s: %w", hostsPath, err)
	}
	s.hostsStamp = st
	return s, nil
}

// readFile reads a file and its stamp; a missing file (or an empty path)
// reads as empty.
func readFile(path string) ([]byte, stamp, error) {
	if path == "" {
		return nil, stamp{}, nil
	}
	st, err := stampOf(path)
	if err != nil {
		return nil, stamp{}, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, stamp{}, nil
	}
	if err != nil {
		return nil, stamp{}, fmt.Errorf("read %s: %w", path, err)
	}
	return data, st, nil
}

func stampOf(path string) (stamp, error) {
	if path == "" {
		return stamp{}, nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return stamp{mtime: fi.ModTime(), size: fi.Size(), ok: true}, nil
}

// current returns the snapshot, re-reading the files first when their
// stamps changed. A failed re-read keeps the previous snapshot.
func (r *Resolver) current() *snapshot {
	s := r.cur.Load()
	now := time.Now().UnixNano()
	last := r.lastCheck.Load()
	if now-last < int64(r.recheck) || !r.lastCheck.CompareAndSwap(last, now) {
		return s
	}
	rs, err1 := stampOf(r.resolvPath)
	hs, err2 := stampOf(r.hostsPath)
	if err1 != nil || err2 != nil || (rs == s.resolvStamp && hs == s.hostsStamp) {
		return s
	}
	if err := r.Reload(); err != nil {
		return s
	}
	return r.cur.Load()
}

// LookupNetIP returns host's addresses: an IP literal (bracketed IPv6
// too) as is; else the hosts-file entries for the name; else the IPv4
// then the IPv6 addresses the container's nameservers give for the first
// search candidate that has any. A name that does not exist gives a
// *net.DNSError with IsNotFound set.
func (r *Resolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	lit := host
	if strings.HasPrefix(lit, "[") && strings.HasSuffix(lit, "]") {
		lit = lit[1 : len(lit)-1]
	}
	if a, err := netip.ParseAddr(lit); err == nil {
		return []netip.Addr{a}, nil
	}
	if !validName(host) {
		return nil, &net.DNSError{Err: "invalid host name", Name: host, IsNotFound: true}
	}
	name := strings.ToLower(host)
	s := r.current()
	if addrs := s.hosts[strings.TrimSuffix(name, ".")]; len(addrs) > 0 {
		return append([]netip.Addr(nil), addrs...), nil
	}
	c := s.conf
	if len(c.servers) == 0 {
		return nil, &net.DNSError{Err: "no nameservers in the container's resolv.conf", Name: host}
	}
	start := 0
	if c.rotate {
		start = int(r.next.Add(1)) % len(c.servers)
	}
	var lastErr error
	for _, fq := range c.candidates(name) {
		addrs, err := r.lookupBoth(ctx, c, start, fq)
		if err == nil {
			return addrs, nil
		}
		if !errors.Is(err, errNotFound) {
			lastErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if lastErr != nil {
		de := &net.DNSError{Err: lastErr.Error(), Name: host, UnwrapErr: lastErr}
		var ne net.Error
		de.IsTimeout = errors.As(lastErr, &ne) && ne.Timeout()
		return nil, de
	}
	return nil, &net.DNSError{Err: errNotFound.Error(), Name: host, IsNotFound: true}
}

// lookupBoth queries A and AAAA for one absolute name in parallel.
func (r *Resolver) lookupBoth(ctx context.Context, c *config, start int, fq string) ([]netip.Addr, error) {
	type result struct {
		addrs []netip.Addr
		err   error
	}
	aaaa := make(chan result, 1)
	go func() {
		addrs, err := r.query(ctx, c, start, fq, dnsmessage.TypeAAAA)
		aaaa <- result{addrs, err}
	}()
	v4, err4 := r.query(ctx, c, start, fq, dnsmessage.TypeA)
	v6 := <-aaaa
	addrs := append(v4, v6.addrs...)
	if len(addrs) > 0 {
		return addrs, nil
	}
	switch {
	case err4 != nil && !errors.Is(err4, errNotFound):
		return nil, err4
	case v6.err != nil && !errors.Is(v6.err, errNotFound):
		return nil, v6.err
	}
	return nil, errNotFound
}
