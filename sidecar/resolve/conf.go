package resolve

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Limits and defaults as glibc's resolver has them.
const (
	maxNameservers = 3
	maxSearch      = 32
	defaultNdots   = 1
	maxNdots       = 15
	defaultTimeout = 5 * time.Second
	maxTimeout     = 30 * time.Second
	defaultTries   = 2
	maxTries       = 5
)

// config is a parsed resolv.conf.
type config struct {
	servers  []netip.Addr
	search   []string // lower case, without the trailing dot
	ndots    int
	timeout  time.Duration
	attempts int
	rotate   bool
	tcp      bool // options use-vc / tcp
}

// parseResolvConf reads resolv.conf the way glibc does: up to three
// nameservers; the last of `search` and `domain` wins; unknown lines and
// options are ignored.
func parseResolvConf(r io.Reader) (*config, error) {
	c := &config{ndots: defaultNdots, timeout: defaultTimeout, attempts: defaultTries}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil && len(c.servers) < maxNameservers {
				c.servers = append(c.servers, a.Unmap())
			}
		case "domain":
			c.search = domains(f[1:2])
		case "search":
			c.search = domains(f[1:])
		case "options":
			for _, o := range f[1:] {
				c.option(o)
			}
		}
	}
	return c, sc.Err()
}

func domains(list []string) []string {
	out := make([]string, 0, len(list))
	for _, d := range list {
		d = strings.TrimSuffix(strings.ToLower(d), ".")
		if d == "" || !validName(d) || len(out) == maxSearch {
			continue
		}
		out = append(out, d)
	}
	return out
}

func (c *config) option(o string) {
	name, val, _ := strings.Cut(o, ":")
	n, err := strconv.Atoi(val)
	if err != nil {
		n = -1
	}
	switch name {
	case "ndots":
		if n >= 0 {
			c.ndots = min(n, maxNdots)
		}
	case "timeout":
		if n >= 1 {
			c.timeout = min(time.Duration(n)*time.Second, maxTimeout)
		}
	case "attempts":
		if n >= 1 {
			c.attempts = min(n, maxTries)
		}
	case "rotate":
		c.rotate = true
	case "use-vc", "usevc", "tcp":
		c.tcp = true
	}
}

// parseHosts reads a hosts file into a map from lower-case name (and
// alias) to its addresses, in file order.
func parseHosts(r io.Reader) (map[string][]netip.Addr, error) {
	m := make(map[string][]netip.Addr)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		a = a.Unmap()
		for _, name := range f[1:] {
			name = strings.TrimSuffix(strings.ToLower(name), ".")
			if name == "" || contains(m[name], a) {
				continue
			}
			m[name] = append(m[name], a)
		}
	}
	return m, sc.Err()
}

func contains(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}

// candidates are the absolute names to query for name, in order: a name
// with a trailing dot as is; one with at least ndots dots as is and then
// with each search domain; a shorter one with each search domain first.
func (c *config) candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	asIs := name + "."
	out := make([]string, 0, len(c.search)+1)
	dots := strings.Count(name, ".")
	if dots >= c.ndots {
		out = append(out, asIs)
	}
	for _, d := range c.search {
		if fq := name + "." + d + "."; len(fq) <= 254 {
			out = append(out, fq)
		}
	}
	if dots < c.ndots {
		out = append(out, asIs)
	}
	return out
}

// validName reports whether s is a plausible host name: dot-separated
// labels of 1 to 63 letters, digits, hyphens or underscores, 253
// characters at most (a trailing dot allowed).
func validName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			switch {
			case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_':
			default:
				return false
			}
		}
	}
	return true
}
