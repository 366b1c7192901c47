// Package engine is moat's OPA-backed policy.Decider: it decides whether a
// sandboxed process may connect to host:port, and whether an HTTP request on
// an inspected connection is allowed, with the semantics of NVIDIA
// OpenShell's sandbox-policy.rego.
//
// A policy is compiled once per Load into a data document indexed for keyed
// lookups (exact "host:port", hostless endpoints by port, host globs by
// their literal last two labels), whose entries carry what the module
// checks next (the policy's binaries, the endpoint's HTTP rules), and an
// embedded Rego module compiled with its two queries; each decision is then
// one topdown evaluation of a compiled query with an AST input, no JSON
// round trip. The input reuses the index's terms and, in the common case, a
// pooled document (see pooledInput); the store answers the decision's one
// lookup from Go maps (see indexStore). OPA returns structured results
// (matching endpoints, matched and listing policies); deny reasons are
// worded in Go, so that a cached verdict can render the reason with the
// current caller's command line.
//
// Connection verdicts are cached per policy revision, keyed by the whole
// identity (executable and ancestors, each with its fingerprint), host and
// port. Load swaps a new compiled policy in atomically and keeps the old
// one if compiling fails (last-known-good). An Engine is safe for
// concurrent use.
//
// The package imports OPA, so only the processes that decide (the sidecar,
// `moat policy check`) should link it; see policy.Decider.
package engine

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/moatsandbox/moat/policy"
)

// Name is the engine name decisions carry (Decision.Engine).
const Name = "opa"

// ErrNoPolicy is returned by Decide and DecideRequest before a policy has
// been loaded.
var ErrNoPolicy = errors.New("policy engine: no policy loaded")

//go:embed moat.rego
var module string

// Queries of the embedded module.
const (
	connQuery    = "data.moat.sandbox.decision"
	requestQuery = "data.moat.sandbox.request_allowed"
)

// Engine decides connections and requests against the loaded policy. The
// zero value has no policy; Load one before deciding.
type Engine struct {
	cur atomic.Pointer[compiled]
	mu  sync.Mutex // serialises Load
	rev uint64     // last revision handed out, under mu
}

var _ policy.Decider = (*Engine)(nil)

// compiled is one loaded revision of a policy.
type compiled struct {
	rev     uint64
	policy  *policy.Policy
	idx     *index
	conn    *topdown.Query // the queries, configured but for their input
	request *topdown.Query
	cache   *cache
}

// New returns an engine with p loaded, or with no policy when p is nil
// (decisions then fail with ErrNoPolicy until Load).
func New(p *policy.Policy) (*Engine, error) {
	e := &Engine{}
	if p == nil {
		return e, nil
	}
	if err := e.Load(context.Background(), p); err != nil {
		return nil, err
	}
	return e, nil
}

// Load compiles p and, if that succeeds, makes it the policy every later
// decision uses, with a new revision and an empty decision cache. If it
// fails, the policy loaded before stays in force and the error is returned.
// Decisions running concurrently finish on the revision they started with.
func (e *Engine) Load(ctx context.Context, p *policy.Policy) error {
	if p == nil {
		return errors.New("load policy: nil policy")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := compile(ctx, p)
	if err != nil {
		return fmt.Errorf("load policy %q: %w", p.Source, err)
	}
	e.rev++
	c.rev = e.rev
	e.cur.Store(c)
	return nil
}

// Revision returns the revision of the loaded policy: 0 before the first
// successful Load, then one more for each.
func (e *Engine) Revision() uint64 {
	if c := e.cur.Load(); c != nil {
		return c.rev
	}
	return 0
}

// Policy returns the loaded policy, or nil.
func (e *Engine) Policy() *policy.Policy {
	if c := e.cur.Load(); c != nil {
		return c.policy
	}
	return nil
}

func compile(ctx context.Context, p *policy.Policy) (*compiled, error) {
	idx, err := buildIndex(p)
	if err != nil {
		return nil, fmt.Errorf("index policy: %w", err)
	}
	parsed, err := ast.ParseModuleWithOpts("moat.rego", module, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse rego: %w", err)
	}
	// One store, read-only and already in AST form, shared by both queries.
	store := newIndexStore(idx)
	// The module is compiled once; its queries are compiled and evaluated
	// with topdown directly (see eval).
	compiler := ast.NewCompiler()
	if compiler.Compile(map[string]*ast.Module{"moat.rego": parsed}); compiler.Failed() {
		return nil, fmt.Errorf("compile rego: %w", compiler.Errors)
	}
	// The store is never written, so one read transaction serves every
	// evaluation of this revision (an unreferenced revision is garbage
	// collected with its store; the transaction holds no other resource).
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("open store transaction: %w", err)
	}
	prepare := func(query string) (*topdown.Query, error) {
		ref, err := ast.ParseRef(query)
		if err != nil {
			return nil, fmt.Errorf("parse query %s: %w", query, err)
		}
		qc := compiler.QueryCompiler()
		body, err := qc.Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(resultVar), ast.NewTerm(ref))))
		if err != nil {
			return nil, fmt.Errorf("compile query %s: %w", query, err)
		}
		return topdown.NewQuery(body).
			WithQueryCompiler(qc).
			WithCompiler(compiler).
			WithStore(store).
			WithTransaction(txn).
			WithMetrics(noMetrics).
			WithBaseCache(noBaseCache{}).
			WithVirtualCache(noVirtualCache{}).
			WithRequestMetadata(noRequestMetadata).
			WithInterQueryBuiltinValueCache(idx.globs), nil
	}
	c := &compiled{policy: p, idx: idx, cache: newCache(cacheSize)}
	if c.conn, err = prepare(connQuery); err != nil {
		return nil, err
	}
	if c.request, err = prepare(requestQuery); err != nil {
		return nil, err
	}
	return c, nil
}

// resultVar is the variable the queries bind their result to.
var resultVar = ast.Var("result")

// eval evaluates a query with input and returns its single result, or nil
// when it is undefined. It calls topdown with the query's own copy of a
// configured template rather than rego's Eval, which would build the same
// query afresh (some twenty options) and convert every result. The
// evaluation shares the compiled policy's read transaction and precompiled
// globs, collects no metrics, caches no data reads, and checks ctx only
// before starting (a decision takes microseconds; rego would otherwise
// start a goroutine per evaluation to watch ctx).
func (c *compiled) eval(ctx context.Context, tmpl *topdown.Query, input *ast.Term) (*ast.Term, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("eval rego: %w", err)
	}
	q := *tmpl // Iter sets fields of its query (the time); each call its own
	var out *ast.Term
	err := q.WithInput(input).Iter(ctx, func(qr topdown.QueryResult) error {
		out = qr[resultVar]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("eval rego: %w", err)
	}
	return out, nil
}

var (
	noMetrics = metrics.NoOp()

	// noRequestMetadata is the request metadata of every evaluation:
	// none. OPA hands it to builtins that use it (http.send and the
	// like, which the module does not call) and makes an empty map per
	// evaluation when given none. Nothing writes to it.
	noRequestMetadata = map[string]any{}
)

// noBaseCache disables OPA's per-evaluation cache of data reads: it exists
// to avoid converting large JSON documents to AST repeatedly, but this
// store already holds AST values, so a read is a few map lookups and
// caching it would only allocate.
type noBaseCache struct{}

func (noBaseCache) Get(ast.Ref) ast.Value  { return nil }
func (noBaseCache) Put(ast.Ref, ast.Value) {}

// noVirtualCache disables OPA's per-evaluation cache of rule values. The
// module refers to each rule at most twice, and its rules are a few keyed
// lookups, cheaper to redo than the cache's per-evaluation maps are to
// build.
type noVirtualCache struct{}

func (noVirtualCache) Push()                         {}
func (noVirtualCache) Pop()                          {}
func (noVirtualCache) Get(ast.Ref) (*ast.Term, bool) { return nil, false }
func (noVirtualCache) Put(ast.Ref, *ast.Term)        {}
func (noVirtualCache) Keys() []ast.Ref               { return nil }
