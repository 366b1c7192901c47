package engine

import (
	"github.com/gobwas/glob"
	"github.com/open-policy-agent/opa/v1/ast"
	builtincache "github.com/open-policy-agent/opa/v1/topdown/cache"
)

// globs holds every glob of a compiled policy, compiled once at load time
// with the separators the Rego module passes to glob.match.
//
// It is handed to OPA as the inter-query builtin value cache, which is
// where glob.match looks for a compiled pattern before compiling one (under
// the id "<pattern>-<separators>"). Without it glob.match would use OPA's
// process-wide cache of 100 patterns with random eviction, and a policy
// with more globs than that would compile some on most decisions. The map
// is read-only after load, so lookups take no lock. A pattern OPA asks for
// that is not here (there should be none) is compiled by OPA as usual.
type globs map[string]*glob.Pattern

var _ builtincache.InterQueryValueCache = globs(nil)

// compile compiles pattern with separator sep (0: none) and records it,
// reporting whether it is valid; OPA's glob.match fails on an invalid one.
func (g globs) compile(pattern string, sep rune) bool {
	var seps []rune
	id := pattern + "-"
	if sep != 0 {
		seps = []rune{sep}
		id += string(sep)
	}
	if _, ok := g[id]; ok {
		return true
	}
	p, err := glob.Compile(pattern, seps...)
	if err != nil {
		return false
	}
	g[id] = p
	return true
}

// Get implements builtincache.InterQueryValueCache.
func (g globs) Get(k ast.Value) (any, bool) {
	s, ok := k.(ast.String)
	if !ok {
		return nil, false
	}
	p, ok := g[string(s)]
	if !ok {
		return nil, false
	}
	return p, true
}

// Insert implements builtincache.InterQueryValueCache; the set is fixed at load.
func (globs) Insert(ast.Value, any) int { return 0 }

// Delete implements builtincache.InterQueryValueCache.
func (globs) Delete(ast.Value) {}

// GetCache implements builtincache.InterQueryValueCache: no named caches.
func (globs) GetCache(string) builtincache.InterQueryValueCacheBucket { return nil }

// UpdateConfig implements builtincache.InterQueryValueCache.
func (globs) UpdateConfig(*builtincache.Config) {}
