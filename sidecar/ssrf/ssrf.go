// Package ssrf is the sidecar's server-side request forgery guard: after
// the policy allowed a destination and its name was resolved, it decides
// whether the resolved addresses may be dialled.
//
// The rules follow OpenShell and Smokescreen. Control-plane ports (etcd,
// the Kubernetes API and kubelet) are always refused. Without allowed_ips,
// a destination is refused if any address it resolves to is internal
// (loopback, private, link-local including cloud metadata, CGNAT and the
// other special-purpose ranges, also when embedded in an IPv6 form). With
// allowed_ips, or implicitly when the host is a literal IP, every address
// must be inside the list, and loopback, link-local, unspecified,
// multicast and broadcast addresses stay refused whatever the list says.
// The sidecar's own addresses are always refused.
package ssrf

import (
	"fmt"
	"net/netip"
	"strings"
)

// blockedPorts are refused on every address: etcd (2379, 2380), the
// Kubernetes API server (6443) and the kubelet (10250, 10255).
var blockedPorts = map[uint16]bool{2379: true, 2380: true, 6443: true, 10250: true, 10255: true}

// Error is a refusal. Reason is worded as OpenShell words it.
type Error struct {
	Reason string
	// Addr is the refused address; invalid when the port or the
	// allowed_ips list was at fault.
	Addr netip.Addr
}

func (e *Error) Error() string { return e.Reason }

// Guard checks resolved destinations.
type Guard struct {
	// LocalAddrs returns the addresses of the sidecar's network namespace,
	// which are always refused (the agent must not reach the sidecar's
	// other listeners through the proxy). It is called on every Check;
	// nil means none.
	LocalAddrs func() []netip.Addr
}

// Check decides whether host:port, resolved to addrs, may be dialled under
// the matched policy's allowedIPs (CIDRs or single addresses). It returns
// the address to dial, the first one, once every address passed; or an
// *Error.
func (g *Guard) Check(host string, port uint16, addrs []netip.Addr, allowedIPs []string) (netip.Addr, error) {
	if blockedPorts[port] {
		return netip.Addr{}, &Error{Reason: fmt.Sprintf("port %d is always blocked", port)}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, &Error{Reason: fmt.Sprintf("%s resolved to no addresses, connection rejected", host)}
	}
	allowed, err := ParseAllowedIPs(allowedIPs)
	if err != nil {
		return netip.Addr{}, &Error{Reason: fmt.Sprintf("%s: %v, connection rejected", host, err)}
	}
	if len(allowed) == 0 {
		allowed = implicitAllowed(host)
	}
	var local []netip.Addr
	if g != nil && g.LocalAddrs != nil {
		local = g.LocalAddrs()
	}
	for _, a := range addrs {
		if err := check(host, normal(a), allowed, local); err != nil {
			return netip.Addr{}, err
		}
	}
	return normal(addrs[0]), nil
}

// check applies the rules to one address.
func check(host string, a netip.Addr, allowed []netip.Prefix, local []netip.Addr) *Error {
	if !a.IsValid() {
		return &Error{Reason: fmt.Sprintf("%s resolves to an invalid address, connection rejected", host)}
	}
	for _, l := range local {
		if normal(l) == a {
			return &Error{Addr: a, Reason: fmt.Sprintf("%s resolves to %s, an address of the sandbox proxy itself, connection rejected", host, a)}
		}
	}
	kind, always := Classify(a)
	if len(allowed) == 0 {
		if kind != "" {
			return &Error{Addr: a, Reason: fmt.Sprintf("%s resolves to internal address %s, connection rejected", host, a)}
		}
		return nil
	}
	if always {
		return &Error{Addr: a, Reason: fmt.Sprintf("%s resolves to always-blocked %s address %s, connection rejected", host, kind, a)}
	}
	for _, p := range allowed {
		if p.Contains(a) {
			return nil
		}
	}
	return &Error{Addr: a, Reason: fmt.Sprintf("%s resolves to %s, which is not in allowed_ips, connection rejected", host, a)}
}

// ParseAllowedIPs parses an allowed_ips list: CIDRs (masked to their
// network) or single addresses. IPv4-mapped entries become IPv4 ones.
func ParseAllowedIPs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fmt.Errorf("invalid allowed_ips entry %q", s)
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("invalid allowed_ips entry %q", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// implicitAllowed is the allowed_ips list a literal-IP host implies: the
// address itself, unless it is always blocked (then the default rules
// apply and refuse it as internal).
func implicitAllowed(host string) []netip.Prefix {
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		return nil
	}
	a = normal(a)
	if _, always := Classify(a); always {
		return nil
	}
	return []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
}

// normal drops the zone and unmaps IPv4-mapped addresses, the form that
// is compared and dialled.
func normal(a netip.Addr) netip.Addr { return a.WithZone("").Unmap() }
