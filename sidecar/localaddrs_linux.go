package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// localAddrs keeps the addresses of the sidecar's network namespace for
// the SSRF guard, which refuses them on every connection. Listing them
// is a netlink dump (seven system calls and a parse), so the list is
// kept and listed again only after the kernel announced an address
// change on a subscribed netlink socket, or after that socket lost
// messages (its receive buffer overflowed).
type localAddrs struct {
	logger *slog.Logger
	sub    *os.File // NETLINK_ROUTE, subscribed to address changes
	stale  atomic.Bool
	done   chan struct{}

	mu    sync.Mutex // serializes listings
	addrs atomic.Pointer[[]netip.Addr]
}

// watchLocalAddrs subscribes to address changes in the calling thread's
// netns, then lists the addresses once; it fails if either fails, so the
// guard never starts without them.
func watchLocalAddrs(logger *slog.Logger) (*localAddrs, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("address watch socket: %w", err)
	}
	groups := uint32(unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("subscribe to address changes: %w", err)
	}
	l := &localAddrs{logger: logger, sub: os.NewFile(uintptr(fd), "rtnetlink"), done: make(chan struct{})}
	l.stale.Store(true)
	if _, err := l.list(); err != nil {
		l.sub.Close()
		return nil, err
	}
	go l.watch()
	return l, nil
}

// watch marks the list stale on every announcement until Close.
func (l *localAddrs) watch() {
	defer close(l.done)
	buf := make([]byte, 16<<10)
	for {
		_, err := l.sub.Read(buf)
		switch {
		case err == nil, errors.Is(err, unix.ENOBUFS):
			l.stale.Store(true)
		case errors.Is(err, os.ErrClosed):
			return
		default:
			// The subscription is broken: list on every use from now on.
			l.logger.Warn("address watch failed; listing addresses per connection", "err", err)
			l.stale.Store(true)
			l.sub.Close()
			return
		}
	}
}

// Addrs returns the netns's addresses, listing them again if they may
// have changed. When a listing fails, the last list stands and the next
// call tries again.
func (l *localAddrs) Addrs() []netip.Addr {
	select {
	case <-l.done:
		l.stale.Store(true) // no subscription: every call lists
	default:
	}
	if l.stale.Load() {
		addrs, err := l.list()
		if err == nil {
			return addrs
		}
		l.logger.Warn("list local addresses", "err", err)
	}
	return *l.addrs.Load()
}

// list reads the addresses if they are stale. The stale mark is cleared
// before the dump, so a change announced during it marks them again.
func (l *localAddrs) list() ([]netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stale.Swap(false) {
		return *l.addrs.Load(), nil
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		l.stale.Store(true)
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	addrs := make([]netip.Addr, 0, len(ifAddrs))
	for _, a := range ifAddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			addrs = append(addrs, p.Addr())
		}
	}
	l.addrs.Store(&addrs)
	return addrs, nil
}

// Close ends the subscription.
func (l *localAddrs) Close() error {
	err := l.sub.Close()
	<-l.done
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
