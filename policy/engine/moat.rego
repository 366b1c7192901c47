# moat's connection and request decisions, with OpenShell's semantics
# (crates/openshell-sandbox/data/sandbox-policy.rego), over data that the Go
# side indexes for keyed lookups (see data.go):
#
#   data.idx.exact[host:port]      [[policy key, endpoint index], ...]
#   data.idx.hostless[port]        same, hostless endpoints with allowed_ips
#   data.idx.globs[bucket]         [{pattern, refs}], host globs by the literal
#                                  labels they end in, and port
#   data.idx.binaries[key][path]   true for each exact binary of a policy
#   data.idx.binary_globs[key]     [pattern, ...]
#   data.idx.rules[key][index]     [{method, path, query?}], L7 rules of an endpoint
#
# The Go side also normalises the input (the host is lowercased) and names
# only the lookups that can succeed: input.lookups is "exact" when only the
# exact one can, else "all", and input.host_port, input.hostless_port and
# input.glob_buckets are present only when their entries exist. (When no
# lookup can succeed, no endpoint lists the destination and Go denies it
# without asking.) The output is structured; Go picks the matched policy
# and words the deny reasons.
package moat.sandbox

import rego.v1

# --- Connections (L4) ---

# Endpoints, as [policy key, endpoint index], whose host and port match:
# exact host (case-insensitive), host glob with `.` as separator (`*` is
# one label, `**` any number), or hostless with allowed_ips (any host).
# The common case, exact only, is one lookup (rule indexing on
# input.lookups picks the definition).
candidates := data.idx.exact[input.host_port] if input.lookups == "exact"

candidates := [ref | some ref in all_candidates] if input.lookups == "all"

all_candidates contains ref if {
	some ref in data.idx.exact[input.host_port]
}

all_candidates contains ref if {
	some ref in data.idx.hostless[input.hostless_port]
}

all_candidates contains ref if {
	some bucket in input.glob_buckets
	some g in data.idx.globs[bucket]
	glob.match(g.pattern, ["."], input.host)
	some ref in g.refs
}

# A policy's binaries match the executable or one of its ancestors: an
# exact path, or a glob with `/` as separator. Command-line paths never
# grant access and are not in the input.
binary_allowed(key) if {
	binaries := data.idx.binaries[key]
	some path in input.paths
	binaries[path]
}

binary_allowed(key) if {
	some pattern in data.idx.binary_globs[key]
	some path in input.paths
	glob.match(pattern, ["/"], path)
}

# The decision is [candidates, endpoints]: the endpoints are the
# candidates whose policy also allows the binary. The connection is allowed
# iff they are not empty; the matched policy is the smallest key among
# them. Candidates without endpoints mean a binary denial (some policy lists
# the destination). (A pair rather than an object: it is cheaper to build.)
decision := [found, [ref | some ref in found; binary_allowed(ref[0])]] if found := candidates

# --- Requests (L7) ---

# input.endpoints are the decision's endpoints; input.method is upper case.
request_allowed if {
	some ref in input.endpoints
	some rule in data.idx.rules[ref[0]][ref[1]]
	method_matches(rule.method, input.method)
	path_matches(rule.path, input.path)
	query_matches(rule, input.query)
}

method_matches("*", _)

method_matches(want, got) if want == got

# A rule for GET also allows HEAD (as OpenShell does from 283defd28).
method_matches("GET", "HEAD")

path_matches("**", _)

path_matches(pattern, path) if {
	pattern != "**"
	glob.match(pattern, ["/"], path)
}

query_matches(rule, _) if not rule.query

# Every configured parameter must be present and every one of its values
# must match one of its globs; other parameters are ignored. Query globs
# have no separator: null, as OPA reads an empty array as ["."].
query_matches(rule, query) if {
	rule.query
	every name, globs in rule.query {
		values := query[name]
		count(values) > 0
		every value in values {
			some pattern in globs
			glob.match(pattern, null, value)
		}
	}
}
