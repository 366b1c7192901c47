package engine

import (
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/moatsandbox/moat/policy"
)

// Input keys and values of the Rego module.
var (
	hostKey         = ast.StringTerm("host")
	hostPortKey     = ast.StringTerm("host_port")
	hostlessPortKey = ast.StringTerm("hostless_port")
	globBucketsKey  = ast.StringTerm("glob_buckets")
	pathsKey        = ast.StringTerm("paths")
	lookupsKey      = ast.StringTerm("lookups")
	lookupsExact    = ast.StringTerm("exact")
	lookupsGlobs    = ast.StringTerm("globs")
	lookupsAll      = ast.StringTerm("all")
	endpointsKey    = ast.StringTerm("endpoints")
	methodKey       = ast.StringTerm("method")
	pathKey         = ast.StringTerm("path")
	queryKey        = ast.StringTerm("query")

	emptyString = ast.StringTerm("")
)

// maxPooledPaths is the most paths (executable and ancestors) a pooled
// input holds; a longer chain gets an array of its own.
const maxPooledPaths = 8

// pooledInput is a reusable input document for the two common cases, a
// destination that only the exact lookup can match and one that only host
// globs can:
//
//	{"lookups": "exact", "host_port": ..., "paths": [...]}
//	{"lookups": "globs", "host": ..., "glob_buckets": [...], "paths": [...]}
//
// Building one afresh allocates about ten times per decision (the object,
// its map and elements, the array of paths and its hashes, the input
// term). A pooled one is filled in place instead: ast.Array.Set replaces
// an element and ast.Object.Insert the value of an existing key, each
// keeping the cached hashes right. OPA only reads the input while it
// evaluates, and a decision's result holds data terms only, never input
// ones, so the document can be reused as soon as the evaluation returns.
// sync.Pool gives it to one goroutine at a time.
type pooledInput struct {
	obj  ast.Object
	term *ast.Term // of obj, made once

	// paths[n] is the array term of n paths, made on first use.
	paths [maxPooledPaths + 1]*ast.Term
}

var (
	exactInputs = sync.Pool{New: func() any { return newPooledInput(lookupsExact, hostPortKey) }}
	globInputs  = sync.Pool{New: func() any { return newPooledInput(lookupsGlobs, hostKey, globBucketsKey) }}
)

// newPooledInput returns an input document with lookups, paths and keys,
// their values to be set.
func newPooledInput(lookups *ast.Term, keys ...*ast.Term) *pooledInput {
	items := [][2]*ast.Term{{lookupsKey, lookups}, {pathsKey, ast.ArrayTerm()}}
	for _, k := range keys {
		items = append(items, [2]*ast.Term{k, emptyString})
	}
	in := &pooledInput{obj: ast.NewObject(items...)}
	in.term = ast.NewTerm(in.obj)
	return in
}

// setExact fills in an exact input: the destination (the index's term
// for "host:port") and the paths of pin's executable and ancestors. It
// returns the document's term, OPA's input.
func (in *pooledInput) setExact(x *index, hostPort *ast.Term, pin *policy.Input) *ast.Term {
	in.obj.Insert(hostPortKey, hostPort)
	in.setPaths(x, pin)
	return in.term
}

// setGlobs fills in a globs input: the lowercased host, its glob buckets
// (not kept) and the paths of pin's executable and ancestors. It returns
// the document's term, OPA's input.
func (in *pooledInput) setGlobs(x *index, host string, buckets []*ast.Term, pin *policy.Input) *ast.Term {
	in.obj.Insert(hostKey, ast.StringTerm(host))
	in.obj.Insert(globBucketsKey, x.bucketsTerm(buckets))
	in.setPaths(x, pin)
	return in.term
}

// setPaths fills in the paths of pin's executable and ancestors.
func (in *pooledInput) setPaths(x *index, pin *policy.Input) {
	n := 1 + len(pin.Ancestors)
	var paths *ast.Term
	if n <= maxPooledPaths {
		if in.paths[n] == nil {
			in.paths[n] = ast.ArrayTerm(slices.Repeat([]*ast.Term{emptyString}, n)...)
		}
		paths = in.paths[n]
		arr := paths.Value.(*ast.Array)
		arr.Set(0, x.pathTerm(pin.Binary.Path))
		for i, a := range pin.Ancestors {
			arr.Set(i+1, x.pathTerm(a.Path))
		}
	} else {
		paths = x.pathsTerm(pin)
	}
	// Insert rehashes the object from its values' hashes, so the paths go
	// in after their elements are set.
	in.obj.Insert(pathsKey, paths)
}

// allInput returns the input document of a destination that a hostless
// endpoint may match, or both the exact lookup and host globs, with the
// lookups that can succeed:
//
//	{"lookups": "all", "host": ..., "paths": [...],
//	 "host_port"?: ..., "hostless_port"?: ..., "glob_buckets"?: [...]}
//
// The terms of host:port, port and buckets are the index's own; buckets
// is not kept.
func allInput(x *index, host string, exact, hostless *ast.Term, buckets []*ast.Term, pin *policy.Input) *ast.Term {
	var items [6][2]*ast.Term
	items[0] = [2]*ast.Term{lookupsKey, lookupsAll}
	items[1] = [2]*ast.Term{hostKey, ast.StringTerm(host)}
	items[2] = [2]*ast.Term{pathsKey, x.pathsTerm(pin)}
	n := 3
	if exact != nil {
		items[n] = [2]*ast.Term{hostPortKey, exact}
		n++
	}
	if hostless != nil {
		items[n] = [2]*ast.Term{hostlessPortKey, hostless}
		n++
	}
	if len(buckets) > 0 {
		items[n] = [2]*ast.Term{globBucketsKey, x.bucketsTerm(buckets)}
		n++
	}
	return ast.NewTerm(ast.NewObject(items[:n]...))
}

// pathsTerm returns a new array term of the paths of pin's executable and
// ancestors.
func (x *index) pathsTerm(pin *policy.Input) *ast.Term {
	paths := make([]*ast.Term, 0, 1+len(pin.Ancestors))
	paths = append(paths, x.pathTerm(pin.Binary.Path))
	for _, a := range pin.Ancestors {
		paths = append(paths, x.pathTerm(a.Path))
	}
	return ast.ArrayTerm(paths...)
}

// maxSeenPaths bounds the terms an index keeps for paths that no policy
// lists.
const maxSeenPaths = 4096

// pathTerm returns a string term for a binary path: the index's own when
// some policy lists the path exactly, else one kept from an earlier
// decision (executables and their ancestors, shells above all, recur), else
// a new one, kept while fewer than maxSeenPaths are.
func (x *index) pathTerm(path string) *ast.Term {
	if t, ok := x.paths[path]; ok {
		return t
	}
	if t, ok := x.seen.Load(path); ok {
		return t.(*ast.Term)
	}
	if x.nseen.Add(1) > maxSeenPaths {
		return ast.StringTerm(path)
	}
	path = strings.Clone(path) // kept: not the caller's memory
	t := ast.StringTerm(path)
	x.seen.Store(path, t)
	return t
}
