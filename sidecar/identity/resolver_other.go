//go:build !linux

package identity

import (
	"context"
	"errors"
	"net/netip"
)

// ErrUnsupported is returned by New outside Linux.
var ErrUnsupported = errors.New("binary identity needs Linux (sock_diag and procfs)")

// Resolver is unavailable outside Linux.
type Resolver struct{}

// New fails outside Linux.
func New(Config) (*Resolver, error) { return nil, ErrUnsupported }

// Lookup fails outside Linux.
func (*Resolver) Lookup(context.Context, netip.AddrPort, netip.AddrPort) (*Process, error) {
	return nil, ErrUnsupported
}

// LookupUDP fails outside Linux.
func (*Resolver) LookupUDP(context.Context, netip.AddrPort, netip.AddrPort) (*Process, error) {
	return nil, ErrUnsupported
}

// LookupICMP fails outside Linux.
func (*Resolver) LookupICMP(context.Context, netip.Addr, uint16) (*Process, error) {
	return nil, ErrUnsupported
}

// Close does nothing outside Linux.
func (*Resolver) Close() error { return nil }
