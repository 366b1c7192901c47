package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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

	// The data document's tables by name, then by key: tables["exact"]
	// is data.idx.exact. They tell what exists, so that a decision looks
	// up only that, and a destination no endpoint can match is denied
	// without evaluation; they hand the input the key's term, built once
	// here; and the store reads the entries from them without walking the
	// document (see indexStore).
	tables        map[string]map[string]slot
	exactKeys     map[string]slot   // host:port, tables["exact"]
	hostlessPorts map[string]slot   // port, tables["hostless"]
	globBuckets   map[string]slot   // suffix:port, tables["globs"]
	ports         map[uint16]string // every endpoint port, as a string

	// bucketLists holds the array term [bucket] for each glob bucket's
	// term: a host that one bucket holds globs for, the common case, needs
	// no array of its own.
	bucketLists map[*ast.Term]*ast.Term

	// paths holds a term for every exact binary path of the policy: the
	// input reuses it for an executable or ancestor with that path (see
	// pathTerm). seen holds terms for other paths, nseen counts them.
	paths map[string]*ast.Term
	seen  sync.Map // string -> *ast.Term
	nseen atomic.Int64
}

// slot is one key of a data table: the key's term and the value under it.
type slot struct {
	key, value *ast.Term
}

// endpointInfo is one endpoint with what decisions derive from it.
type endpointInfo struct {
	ep       *policy.Endpoint
	ips      []string  // allowed_ips, as strings
	extended bool      // sets protocol, tls or allowed_ips
	rules    bool      // has HTTP rules the Rego module checks
	term     *ast.Term // its endpoint entry in the data document
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

// entryLen is the length of an endpoint entry (see buildIndex).
const entryLen = 5

// noTerms is the empty array of an entry's binary globs or rules, shared.
var noTerms = ast.ArrayTerm()

// buildIndex compiles p into an index. The data document is shaped so the
// Rego module only ever looks things up by key:
//
//	exact[host:port]       entries of endpoints with that exact (lowercased) host
//	hostless[port]         entries of hostless endpoints with allowed_ips
//	globs[suffix:port]     [{pattern, entries}] host globs by the literal labels
//	                       they end in (globSuffix); suffix "" for the others
//
// An endpoint's entry carries what the module checks once the endpoint
// matches, so that it needs no further lookup:
//
//	[key, i,                     the endpoint, by policy key and index
//	 {path: true, ...},          the policy's exact binaries
//	 [pattern, ...],             its binary globs
//	 [{method, path, query?}]]   the endpoint's HTTP rules
//
// An array rather than an object: a 10,000-endpoint policy's index is 2
// MB smaller. The binaries and binary globs of a policy are terms that all
// its entries share, as are empty arrays.
//
// Globs that OPA cannot compile (unbalanced brackets or braces; the parser
// warns about them) are left out, so they match nothing, as they would in
// OpenShell, where glob.match fails.
func buildIndex(p *policy.Policy) (*index, error) {
	x := &index{
		endpoints: make(map[string][]endpointInfo, len(p.Network)),
		globs:     globs{},
		ports:     map[uint16]string{},
		paths:     map[string]*ast.Term{},
	}
	for key := range p.Network {
		x.keys = append(x.keys, key)
	}
	sort.Strings(x.keys)

	exact := map[string][]*ast.Term{}
	hostless := map[string][]*ast.Term{}
	globs := map[string]map[string][]*ast.Term{} // bucket -> pattern -> entries

	for _, key := range x.keys {
		np := p.Network[key]
		if np == nil {
			return nil, fmt.Errorf("network policy %q is nil", key)
		}
		keyTerm := ast.StringTerm(key)
		exactBins, globBins := ast.NewObject(), []*ast.Term{}
		for _, b := range np.Binaries {
			switch {
			case !policy.IsHostGlob(b.Path):
				exactBins.Insert(x.policyPath(b.Path), ast.InternedTerm(true))
			case x.globs.compile(b.Path, '/'):
				globBins = append(globBins, ast.StringTerm(b.Path))
			}
		}
		binsTerm, globsTerm := ast.NewTerm(exactBins), noTerms
		if len(globBins) > 0 {
			globsTerm = ast.ArrayTerm(globBins...)
		}

		infos := make([]endpointInfo, len(np.Endpoints))
		for i, ep := range np.Endpoints {
			if ep == nil {
				return nil, fmt.Errorf("network policy %q: endpoint %d is nil", key, i)
			}
			rs, rulesTerm := x.ruleTerms(ep.Rules), noTerms
			if len(rs) > 0 {
				rulesTerm = ast.ArrayTerm(rs...)
			}
			entry := ast.ArrayTerm(keyTerm, ast.InternedTerm(i), binsTerm, globsTerm, rulesTerm)
			infos[i] = endpointInfo{
				ep:       ep,
				ips:      prefixStrings(ep.AllowedIPs),
				extended: ep.Protocol != "" || ep.TLS != "" || len(ep.AllowedIPs) > 0,
				rules:    len(rs) > 0,
				term:     entry,
			}
			x.hasRules = x.hasRules || infos[i].rules
			host := strings.ToLower(ep.Host)
			for _, port := range ep.Ports {
				ps := strconv.Itoa(int(port))
				x.ports[port] = ps
				switch {
				case !ep.IsGlob():
					hp := host + ":" + ps
					exact[hp] = append(exact[hp], entry)
				case x.globs.compile(host, '.'):
					addGlob(globs, globSuffix(host)+":"+ps, host, entry)
				}
				if ep.Host == "" && len(ep.AllowedIPs) > 0 {
					hostless[ps] = append(hostless[ps], entry)
				}
			}
		}
		x.endpoints[key] = infos
	}

	x.exactKeys = entriesTable(exact)
	x.hostlessPorts = entriesTable(hostless)
	x.globBuckets = globsTable(globs)
	x.tables = map[string]map[string]slot{
		"exact":    x.exactKeys,
		"hostless": x.hostlessPorts,
		"globs":    x.globBuckets,
	}
	x.bucketLists = make(map[*ast.Term]*ast.Term, len(x.globBuckets))
	for _, s := range x.globBuckets {
		x.bucketLists[s.key] = ast.ArrayTerm(s.key)
	}
	idx := ast.NewObject()
	for name, table := range x.tables {
		obj := ast.NewObject()
		for _, s := range table {
			obj.Insert(s.key, s.value)
		}
		idx.Insert(ast.StringTerm(name), ast.NewTerm(obj))
	}
	x.data = ast.NewObject(ast.Item(ast.StringTerm("idx"), ast.NewTerm(idx)))
	return x, nil
}

// policyPath returns the term of an exact binary path of the policy,
// making it the first time.
func (x *index) policyPath(path string) *ast.Term {
	t, ok := x.paths[path]
	if !ok {
		t = ast.StringTerm(path)
		x.paths[path] = t
	}
	return t
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

// bucketsFor appends to dst the glob buckets the index has for a
// lowercased host and port: the host's dot-suffixes and "", each with
// ":port".
func (x *index) bucketsFor(dst []*ast.Term, host, port string) []*ast.Term {
	if len(x.globBuckets) == 0 {
		return dst
	}
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
		if s, ok := x.globBuckets[string(b)]; ok {
			dst = append(dst, s.key)
		}
	}
	return dst
}

// bucketsTerm returns the array term of glob buckets: the index's own for
// one bucket, else a new one.
func (x *index) bucketsTerm(buckets []*ast.Term) *ast.Term {
	if len(buckets) == 1 {
		if t := x.bucketLists[buckets[0]]; t != nil {
			return t
		}
	}
	return ast.ArrayTerm(slices.Clone(buckets)...)
}

func addGlob(m map[string]map[string][]*ast.Term, bucket, pattern string, r *ast.Term) {
	if m[bucket] == nil {
		m[bucket] = map[string][]*ast.Term{}
	}
	m[bucket][pattern] = append(m[bucket][pattern], r)
}

// entriesTable turns lists of entries into a table of array terms.
func entriesTable(m map[string][]*ast.Term) map[string]slot {
	table := make(map[string]slot, len(m))
	for k, entries := range m {
		table[k] = slot{ast.StringTerm(k), ast.ArrayTerm(entries...)}
	}
	return table
}

// globsTable turns host globs into a table of arrays of {pattern,
// entries}, by bucket.
func globsTable(m map[string]map[string][]*ast.Term) map[string]slot {
	table := make(map[string]slot, len(m))
	for bucket, patterns := range m {
		var globs []*ast.Term
		for pattern, list := range patterns {
			globs = append(globs, ast.ObjectTerm(
				ast.Item(ast.StringTerm("pattern"), ast.StringTerm(pattern)),
				ast.Item(ast.StringTerm("entries"), ast.ArrayTerm(list...)),
			))
		}
		table[bucket] = slot{ast.StringTerm(bucket), ast.ArrayTerm(globs...)}
	}
	return table
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
