package policy

import (
	"net/netip"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AlwaysBlockedPorts are the etcd and Kubernetes control-plane ports the
// proxy refuses whatever the policy says.
var AlwaysBlockedPorts = []uint16{2379, 2380, 6443, 10250, 10255}

// alwaysBlocked are the ranges no allowed_ips entry may reach: loopback,
// link-local (cloud metadata) and unspecified addresses.
var alwaysBlocked = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("::/128"),
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "*"}

func (r *reader) networkPolicies(n *yaml.Node, path string, out map[string]*NetworkPolicy) {
	if isNull(resolve(n)) {
		return
	}
	fields, _ := r.mapping(n, path)
	for _, f := range fields {
		ppath := join(path, f.key)
		if strings.TrimSpace(f.key) == "" || strings.ContainsAny(f.key, "\x00\n\r'") {
			r.errorf(f.keyN, ppath, "invalid policy key %q", f.key)
			continue
		}
		np := &NetworkPolicy{Key: f.key, Name: f.key}
		listed := 0 // endpoints written, valid or not
		sub, ok := r.mapping(f.value, ppath, "name", "endpoints", "binaries")
		if !ok {
			continue
		}
		for _, sf := range sub {
			spath := join(ppath, sf.key)
			switch sf.key {
			case "name":
				if s, ok := r.str(sf.value, spath); ok && s != "" {
					np.Name = s
				}
			case "endpoints":
				items, _ := r.sequence(sf.value, spath)
				listed = len(items)
				for i, it := range items {
					if ep := r.endpoint(it, index(spath, i)); ep != nil {
						np.Endpoints = append(np.Endpoints, ep)
					}
				}
			case "binaries":
				items, _ := r.sequence(sf.value, spath)
				for i, it := range items {
					if b, ok := r.binary(it, index(spath, i)); ok {
						np.Binaries = append(np.Binaries, b)
					}
				}
			}
		}
		if listed == 0 {
			r.warnf(f.value, ppath, "policy has no endpoints; it allows nothing")
		} else if len(np.Binaries) == 0 {
			r.warnf(f.value, ppath, "policy has no binaries; it allows nothing")
		}
		out[f.key] = np
	}
}

func (r *reader) binary(n *yaml.Node, path string) (Binary, bool) {
	fields, ok := r.mapping(n, path, "path", "harness")
	if !ok {
		return Binary{}, false
	}
	var b Binary
	for _, f := range fields {
		if f.key != "path" { // harness is accepted and ignored, as in OpenShell
			continue
		}
		s, ok := r.str(f.value, join(path, "path"))
		if !ok {
			return Binary{}, false
		}
		if !r.checkFSPath(f.value, join(path, "path"), s) {
			return Binary{}, false
		}
		if err := CheckGlob(s, '/'); err != nil {
			r.warnf(f.value, join(path, "path"), "%v; it will match nothing", err)
		}
		b.Path = s
	}
	if b.Path == "" {
		r.errorf(n, path, "binary needs 'path'")
		return Binary{}, false
	}
	return b, true
}

func (r *reader) endpoint(n *yaml.Node, path string) *Endpoint {
	fields, ok := r.mapping(n, path, "host", "port", "ports", "protocol", "tls", "enforcement",
		"access", "rules", "allowed_ips")
	if !ok {
		return nil
	}
	ep := &Endpoint{}
	var hasPort, hasPorts, hasRules bool
	var rulesN *yaml.Node
	before := len(r.diags)
	for _, f := range fields {
		fpath := join(path, f.key)
		switch f.key {
		case "host":
			if s, ok := r.str(f.value, fpath); ok {
				r.checkHost(f.value, fpath, s)
				ep.Host = s
			}
		case "port":
			hasPort = true
			if p, ok := r.port(f.value, fpath); ok {
				ep.Ports = append(ep.Ports, p)
			}
		case "ports":
			hasPorts = true
			items, _ := r.sequence(f.value, fpath)
			if len(items) == 0 {
				r.errorf(f.value, fpath, "'ports' must not be empty")
			}
			for i, it := range items {
				if p, ok := r.port(it, index(fpath, i)); ok {
					ep.Ports = append(ep.Ports, p)
				}
			}
		case "protocol":
			ep.Protocol = r.enum(f.value, fpath, ProtocolREST, ProtocolSQL)
		case "tls":
			ep.TLS = r.enum(f.value, fpath, TLSSkip, TLSTerminate, TLSPassthrough)
			if ep.TLS == TLSTerminate || ep.TLS == TLSPassthrough {
				r.warnf(f.value, fpath, "'tls: %s' is deprecated and has no effect (TLS is terminated automatically; use 'tls: skip' to relay it untouched)", ep.TLS)
			}
		case "enforcement":
			ep.Enforcement = r.enum(f.value, fpath, Enforce, AuditOnly)
		case "access":
			ep.Access = r.enum(f.value, fpath, AccessReadOnly, AccessReadWrite, AccessFull)
		case "rules":
			hasRules, rulesN = true, f.value
			items, _ := r.sequence(f.value, fpath)
			for i, it := range items {
				if rule, ok := r.rule(it, index(fpath, i)); ok {
					ep.Rules = append(ep.Rules, rule)
				}
			}
		case "allowed_ips":
			ep.AllowedIPs = r.allowedIPs(f.value, fpath)
		}
	}
	ep.Ports = dedupPorts(ep.Ports)
	r.checkEndpoint(n, path, ep, hasPort, hasPorts, hasRules, rulesN)
	if r.failedSince(before) {
		return nil
	}
	ep.Rules = append(ep.Rules, accessRules(ep.Access)...)
	return ep
}

func (r *reader) failedSince(i int) bool {
	for _, d := range r.diags[i:] {
		if !d.Warning {
			return true
		}
	}
	return false
}

// checkEndpoint applies the cross-field rules of OpenShell's L7 validation
// and the ones its users were bitten by.
func (r *reader) checkEndpoint(n *yaml.Node, path string, ep *Endpoint, hasPort, hasPorts, hasRules bool, rulesN *yaml.Node) {
	switch {
	case hasPort && hasPorts:
		r.errorf(n, path, "'port' and 'ports' are mutually exclusive")
	case !hasPort && !hasPorts:
		r.errorf(n, path, "endpoint needs 'port' or 'ports'")
	}
	if ep.Host == "" && len(ep.AllowedIPs) == 0 {
		r.errorf(n, path, "endpoint needs 'host' (or, for a hostless endpoint, 'allowed_ips')")
	}
	switch {
	case hasRules && ep.Access != "":
		r.errorf(n, path, "'rules' and 'access' are mutually exclusive")
	case hasRules && len(ep.Rules) == 0 && rulesN != nil && len(resolve(rulesN).Content) == 0:
		r.errorf(rulesN, join(path, "rules"), "'rules' must not be empty")
	case ep.Protocol != "" && !hasRules && ep.Access == "":
		r.errorf(n, path, "'protocol' requires 'rules' or 'access'")
	case ep.Protocol == "" && (hasRules || ep.Access != ""):
		r.warnf(n, path, "'rules'/'access' have no effect without 'protocol: rest'")
	}
	if ep.Protocol == ProtocolSQL && ep.Enforcement == Enforce {
		r.errorf(n, path, "'protocol: sql' cannot be enforced (SQL is not inspected); use 'enforcement: audit'")
	}
	if ep.Protocol == ProtocolREST && ep.Enforcement == "" {
		r.warnf(n, path, "endpoint has L7 rules but no 'enforcement'; it defaults to audit (denied requests are logged, not blocked)")
	}
	if ep.Protocol == "" && ep.Enforcement != "" {
		r.warnf(n, path, "'enforcement' has no effect without 'protocol'")
	}
	if ep.TLS == TLSSkip && ep.Protocol != "" {
		for _, p := range ep.Ports {
			if p == 443 {
				r.warnf(n, path, "'tls: skip' on port 443 leaves the tunnel encrypted, so its L7 rules cannot be enforced")
				break
			}
		}
	}
	for _, p := range ep.Ports {
		for _, b := range AlwaysBlockedPorts {
			if p == b {
				r.warnf(n, path, "port %d is always refused (etcd/Kubernetes control plane)", p)
			}
		}
	}
}

func (r *reader) enum(n *yaml.Node, path string, values ...string) string {
	s, ok := r.str(n, path)
	if !ok {
		return ""
	}
	if !contains(values, s) {
		r.errorf(n, path, "unknown value %q (expected one of: %s)", s, strings.Join(values, ", "))
		return ""
	}
	return s
}

// checkHost rejects hosts that would match everything, a whole top-level
// domain, or nothing at all.
func (r *reader) checkHost(n *yaml.Node, path, h string) {
	switch {
	case h == "":
		r.errorf(n, path, "empty host (omit 'host' for a hostless allowed_ips endpoint)")
		return
	case strings.Contains(h, "://"):
		r.errorf(n, path, "host %q is a URL; give only the host name", h)
		return
	case strings.ContainsAny(h, "/ \t\r\n\x00@"):
		r.errorf(n, path, "host %q contains characters a host name cannot have", h)
		return
	}
	if strings.Contains(h, ":") {
		if _, err := netip.ParseAddr(h); err != nil {
			r.errorf(n, path, "host %q includes a port; use 'port' or 'ports'", h)
		}
		return
	}
	if !IsHostGlob(h) {
		return
	}
	switch {
	case h == "*" || h == "**":
		r.errorf(n, path, "host %q matches every host; list the hosts, or use a hostless endpoint with 'allowed_ips'", h)
	case !strings.HasPrefix(h, "*.") && !strings.HasPrefix(h, "**."):
		r.errorf(n, path, "host wildcard %q must start with '*.' or '**.'", h)
	case len(strings.Split(h, ".")) <= 2:
		r.errorf(n, path, "host wildcard %q covers a whole top-level domain", h)
	default:
		if err := CheckGlob(h, '.'); err != nil {
			r.errorf(n, path, "%v", err)
		}
	}
}

func (r *reader) rule(n *yaml.Node, path string) (Rule, bool) {
	outer, ok := r.mapping(n, path, "allow")
	if !ok {
		return Rule{}, false
	}
	if len(outer) == 0 {
		r.errorf(n, path, "rule needs 'allow'")
		return Rule{}, false
	}
	apath := join(path, "allow")
	fields, ok := r.mapping(outer[0].value, apath, "method", "path", "command", "query")
	if !ok {
		return Rule{}, false
	}
	var rule Rule
	for _, f := range fields {
		fpath := join(apath, f.key)
		switch f.key {
		case "method":
			if s, ok := r.str(f.value, fpath); ok {
				rule.Method = s
				if !contains(httpMethods, strings.ToUpper(s)) {
					r.warnf(f.value, fpath, "unknown HTTP method %q", s)
				}
			}
		case "path":
			if s, ok := r.str(f.value, fpath); ok {
				rule.Path = s
				if s != "**" && !strings.HasPrefix(s, "/") {
					r.warnf(f.value, fpath, "path %q does not start with '/'; it will match nothing", s)
				}
				if err := CheckGlob(s, '/'); err != nil {
					r.warnf(f.value, fpath, "%v; it will match nothing", err)
				}
			}
		case "command":
			rule.Command, _ = r.str(f.value, fpath)
		case "query":
			rule.Query = r.query(f.value, fpath)
		}
	}
	if rule.Method == "" && rule.Command == "" {
		r.errorf(outer[0].value, apath, "rule needs 'method' (or 'command' for sql)")
		return Rule{}, false
	}
	if rule.Method != "" && rule.Path == "" {
		r.errorf(outer[0].value, apath, "rule needs 'path' (use \"**\" for any path)")
		return Rule{}, false
	}
	return rule, true
}

func (r *reader) query(n *yaml.Node, path string) map[string]QueryMatcher {
	fields, ok := r.mapping(n, path)
	if !ok {
		return nil
	}
	out := make(map[string]QueryMatcher, len(fields))
	for _, f := range fields {
		fpath := join(path, f.key)
		v := f.value
		switch {
		case v.Kind == yaml.ScalarNode && !isNull(v):
			out[f.key] = QueryMatcher{Glob: v.Value}
		case v.Kind == yaml.MappingNode:
			sub, ok := r.mapping(v, fpath, "any")
			if !ok || len(sub) == 0 {
				r.errorf(v, fpath, "query matcher needs 'any'")
				continue
			}
			globs, ok := r.strings(sub[0].value, join(fpath, "any"))
			if !ok {
				continue
			}
			if len(globs) == 0 {
				r.errorf(sub[0].value, join(fpath, "any"), "'any' must not be empty")
				continue
			}
			out[f.key] = QueryMatcher{Any: globs}
		default:
			r.errorf(v, fpath, "query matcher must be a glob string or {any: [globs]}, got %s", kindName(v))
		}
	}
	return out
}

func (r *reader) allowedIPs(n *yaml.Node, path string) []netip.Prefix {
	items, _ := r.sequence(n, path)
	var out []netip.Prefix
	for i, it := range items {
		ipath := index(path, i)
		s, ok := r.str(it, ipath)
		if !ok {
			continue
		}
		pfx, err := parsePrefix(s)
		if err != nil {
			r.errorf(it, ipath, "%q is not an IP address or CIDR", s)
			continue
		}
		if blocked, ok := overlapsBlocked(pfx); ok {
			r.errorf(it, ipath, "%s overlaps %s, which is always blocked (loopback, link-local and unspecified addresses are never reachable)", pfx, blocked)
			continue
		}
		if (pfx.Addr().Is4() && pfx.Bits() < 16) || (pfx.Addr().Is6() && pfx.Bits() < 48) {
			r.warnf(it, ipath, "%s is a very broad range", pfx)
		}
		out = append(out, pfx)
	}
	return out
}

// parsePrefix accepts a CIDR or a bare address (a host-length prefix), and
// maps IPv4-mapped IPv6 forms to IPv4.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func overlapsBlocked(p netip.Prefix) (netip.Prefix, bool) {
	for _, b := range alwaysBlocked {
		if b.Overlaps(p) {
			return b, true
		}
	}
	return netip.Prefix{}, false
}

// accessRules expands an access preset into rules: read-only is GET, HEAD
// and OPTIONS; read-write adds POST, PUT and PATCH (never DELETE); full is
// any method. All on any path.
func accessRules(access string) []Rule {
	var methods []string
	switch access {
	case AccessReadOnly:
		methods = []string{"GET", "HEAD", "OPTIONS"}
	case AccessReadWrite:
		methods = []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}
	case AccessFull:
		methods = []string{"*"}
	}
	rules := make([]Rule, len(methods))
	for i, m := range methods {
		rules[i] = Rule{Method: m, Path: "**"}
	}
	return rules
}

func dedupPorts(ports []uint16) []uint16 {
	if len(ports) < 2 {
		return ports
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	out := ports[:1]
	for _, p := range ports[1:] {
		if p != out[len(out)-1] {
			out = append(out, p)
		}
	}
	return out
}
