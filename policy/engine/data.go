package engine

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moatsandbox/moat/policy"
)

// index is a policy compiled for keyed lookups: the data document handed to
// OPA plus what the Go side needs to turn OPA's structured answer into a
// policy.Decision.
type index struct {
	keys      []string                  // policy keys, sorted
	endpoints map[string][]endpointInfo // policy key -> endpoints, in document order
	hasRules  bool                      // some endpoint has HTTP rules
	globs     globs                     // every valid glob, compiled
	data      ast.Object                // the data document, under "idx"

	// What exists, so that a decision looks up only that, and a
	// destination no endpoint can match is denied without evaluation.
	ports         map[uint16]string // every endpoint port, as a string
	exactKeys     map[string]bool   // host:port
	hostlessPorts map[string]bool   // port
	globBuckets   map[string]bool   // suffix:port
}

// endpointInfo is one endpoint with what decisions derive from it.
type endpointInfo struct {
	ep       *policy.Endpoint
	ips      []string // allowed_ips, as strings
	extended bool     // sets protocol, tls or allowed_ips
	rules    bool     // has HTTP rules the Rego module checks
}

// ref names an endpoint by policy key and document index.
type ref struct {
	key string
	i   int
}

func (x *index) endpoint(r ref) *endpointInfo {
	eps := x.endpoints[r.key]
	if r.i < 0 || r.i >= len(eps) {
		return nil
	}
	return &eps[r.i]
}

// Glob metacharacters as gobwas/glob (OPA's glob.match) reads them.
const globMeta = `*?[]{}\`

// buildIndex compiles p into an index. The data document is shaped so the
// Rego module only ever looks things up by key:
//
//	exact[host:port]       refs of endpoints with that exact (lowercased) host
//	hostless[port]         refs of hostless endpoints with allowed_ips
//	globs[suffix:port]     [{pattern, refs}] host globs by the literal labels
//	                       they end in (globSuffix); suffix "" for the others
//	binaries[key][path]    true for each exact binary path of a policy
//	binary_globs[key]      binary path globs of a policy
//	rules[key][i]          HTTP rules of endpoint i of a policy
//
// A ref is [policy key, endpoint index]. Globs that OPA cannot compile
// (unbalanced brackets or braces; the parser warns about them) are left out,
// so they match nothing, as they would in OpenShell, where glob.match fails.
func buildIndex(p *policy.Policy) (*index, error) {
	x := &index{
		endpoints: make(map[string][]endpointInfo, len(p.Network)),
		globs:     globs{},
		ports:     map[uint16]string{},
	}
	for key := range p.Network {
		x.keys = append(x.keys, key)
	}
	sort.Strings(x.keys)

	exact := map[string][]*ast.Term{}
	hostless := map[string][]*ast.Term{}
	globs := map[string]map[string][]*ast.Term{} // bucket -> pattern -> refs
	binaries := ast.NewObject()
	binaryGlobs := ast.NewObject()
	rules := ast.NewObject()

	for _, key := range x.keys {
		np := p.Network[key]
		if np == nil {
			return nil, fmt.Errorf("network policy %q is nil", key)
		}
		keyTerm := ast.StringTerm(key)
		infos := make([]endpointInfo, len(np.Endpoints))
		epRules := make([]*ast.Term, len(np.Endpoints))
		for i, ep := range np.Endpoints {
			if ep == nil {
				return nil, fmt.Errorf("network policy %q: endpoint %d is nil", key, i)
			}
			infos[i] = endpointInfo{
				ep:       ep,
				ips:      prefixStrings(ep.AllowedIPs),
				extended: ep.Protocol != "" || ep.TLS != "" || len(ep.AllowedIPs) > 0,
			}
			refTerm := ast.ArrayTerm(keyTerm, ast.InternedTerm(i))
			host := strings.ToLower(ep.Host)
			for _, port := range ep.Ports {
				ps := strconv.Itoa(int(port))
				x.ports[port] = ps
				switch {
				case !ep.IsGlob():
					hp := host + ":" + ps
					exact[hp] = append(exact[hp], refTerm)
				case x.globs.compile(host, '.'):
					addGlob(globs, globSuffix(host)+":"+ps, host, refTerm)
				}
				if ep.Host == "" && len(ep.AllowedIPs) > 0 {
					hostless[ps] = append(hostless[ps], refTerm)
				}
			}
			rs := x.ruleTerms(ep.Rules)
			infos[i].rules = len(rs) > 0
			x.hasRules = x.hasRules || infos[i].rules
			epRules[i] = ast.ArrayTerm(rs...)
		}
		x.endpoints[key] = infos

		exactBins, globBins := ast.NewObject(), []*ast.Term{}
		for _, b := range np.Binaries {
			switch {
			case !policy.IsHostGlob(b.Path):
				exactBins.Insert(ast.StringTerm(b.Path), ast.InternedTerm(true))
			case x.globs.compile(b.Path, '/'):
				globBins = append(globBins, ast.StringTerm(b.Path))
			}
		}
		binaries.Insert(keyTerm, ast.NewTerm(exactBins))
		if len(globBins) > 0 {
			binaryGlobs.Insert(keyTerm, ast.ArrayTerm(globBins...))
		}
		if len(np.Endpoints) > 0 {
			rules.Insert(keyTerm, ast.ArrayTerm(epRules...))
		}
	}

	x.exactKeys = keySet(exact)
	x.hostlessPorts = keySet(hostless)
	x.globBuckets = keySet(globs)
	x.data = ast.NewObject(ast.Item(ast.StringTerm("idx"), ast.ObjectTerm(
		ast.Item(ast.StringTerm("exact"), refsObject(exact)),
		ast.Item(ast.StringTerm("hostless"), refsObject(hostless)),
		ast.Item(ast.StringTerm("globs"), globsObject(globs)),
		ast.Item(ast.StringTerm("binaries"), ast.NewTerm(binaries)),
		ast.Item(ast.StringTerm("binary_globs"), ast.NewTerm(binaryGlobs)),
		ast.Item(ast.StringTerm("rules"), ast.NewTerm(rules)),
	)))
	return x, nil
}

// ruleTerms turns HTTP rules into Rego data, upper-casing methods. Rules
// without a method (SQL `command` rules) and rules whose path glob does not
// compile can never allow an HTTP request and are left out.
func (x *index) ruleTerms(rules []policy.Rule) []*ast.Term {
	var out []*ast.Term
	for _, r := range rules {
		if r.Method == "" || (r.Path != "**" && !x.globs.compile(r.Path, '/')) {
			continue
		}
		items := [][2]*ast.Term{
			ast.Item(ast.StringTerm("method"), ast.StringTerm(strings.ToUpper(r.Method))),
			ast.Item(ast.StringTerm("path"), ast.StringTerm(r.Path)),
		}
		if len(r.Query) > 0 {
			q := ast.NewObject()
			for name, m := range r.Query {
				var gs []*ast.Term
				for _, g := range m.Globs() {
					if x.globs.compile(g, 0) {
						gs = append(gs, ast.StringTerm(g))
					}
				}
				// An empty list makes the parameter unmatchable, as an
				// invalid glob would in OpenShell.
				q.Insert(ast.StringTerm(name), ast.ArrayTerm(gs...))
			}
			items = append(items, ast.Item(ast.StringTerm("query"), ast.NewTerm(q)))
		}
		out = append(out, ast.ObjectTerm(items...))
	}
	return out
}

// globSuffix returns the labels a lowercased host glob ends in literally:
// the text after the first dot of the literal tail that follows the glob's
// last metacharacter ("example.com" for `*.example.com`, "b.com" for
// `api-*x.b.com`), or "" when there is none. Every host the glob matches
// ends in "." + suffix, so decisions look the glob up by the host's own
// dot-suffixes (see bucketsFor) and never test it against other hosts.
func globSuffix(pattern string) string {
	tail := pattern[strings.LastIndexAny(pattern, globMeta)+1:]
	i := strings.IndexByte(tail, '.')
	if i < 0 {
		return ""
	}
	return tail[i+1:]
}

// bucketsFor returns the glob buckets the index has for a lowercased host
// and port: the host's dot-suffixes and "", each with ":port".
func (x *index) bucketsFor(host, port string) []*ast.Term {
	if len(x.globBuckets) == 0 {
		return nil
	}
	var out []*ast.Term
	var buf [128]byte
	for i := -1; i < len(host); i++ {
		suffix := ""
		if i >= 0 {
			if host[i] != '.' {
				continue
			}
			suffix = host[i+1:]
		}
		b := append(append(append(buf[:0], suffix...), ':'), port...)
		if x.globBuckets[string(b)] {
			out = append(out, ast.StringTerm(string(b)))
		}
	}
	return out
}

func addGlob(m map[string]map[string][]*ast.Term, bucket, pattern string, r *ast.Term) {
	if m[bucket] == nil {
		m[bucket] = map[string][]*ast.Term{}
	}
	m[bucket][pattern] = append(m[bucket][pattern], r)
}

func refsObject(m map[string][]*ast.Term) *ast.Term {
	obj := ast.NewObject()
	for k, refs := range m {
		obj.Insert(ast.StringTerm(k), ast.ArrayTerm(refs...))
	}
	return ast.NewTerm(obj)
}

func globsObject(m map[string]map[string][]*ast.Term) *ast.Term {
	obj := ast.NewObject()
	for bucket, patterns := range m {
		var entries []*ast.Term
		for pattern, refs := range patterns {
			entries = append(entries, ast.ObjectTerm(
				ast.Item(ast.StringTerm("pattern"), ast.StringTerm(pattern)),
				ast.Item(ast.StringTerm("refs"), ast.ArrayTerm(refs...)),
			))
		}
		obj.Insert(ast.StringTerm(bucket), ast.ArrayTerm(entries...))
	}
	return ast.NewTerm(obj)
}

func keySet[V any](m map[string]V) map[string]bool {
	set := make(map[string]bool, len(m))
	for k := range m {
		set[k] = true
	}
	return set
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
