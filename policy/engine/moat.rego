# moat's connection and request decisions, with OpenShell's semantics
# (crates/openshell-sandbox/data/sandbox-policy.rego), over data that the Go
# side indexes for keyed lookups (see data.go):
#
#   data.idx.exact[host:port]   [entry, ...], endpoints with that exact host
#   data.idx.hostless[port]     same, hostless endpoints with allowed_ips
#   data.idx.globs[bucket]      [{pattern, entries}], host globs by the
#                               literal labels they end in, and port
#
# An entry is one endpoint with what the module checks once it matches, so
# that a decision looks up nothing beyond the tables above:
#
#   entry[0], entry[1]   the endpoint, by policy key and index
#   entry[2]             the policy's exact binaries, {path: true, ...}
#   entry[3]             its binary globs, [pattern, ...]
#   entry[4]             the endpoint's L7 rules, [{method, path, query?}, ...]
#
# The Go side also normalises the input (the host is lowercased) and names
# only the lookups that can succeed: input.lookups is "exact" when only the
# exact one can, "globs" when only host globs can, else "all", and
# input.host_port, input.hostless_port and input.glob_buckets are present
# only when their entries exist (input.host only with "globs" and "all":
# host globs are the only ones to read it). (When no lookup can succeed, no endpoint lists the
# destination and Go denies it without asking.) The output is structured;
# Go picks the matched policy and words the deny reasons.
package moat.sandbox

import rego.v1

# --- Connections (L4) ---

# The decision is [candidates, endpoints]. The candidates are the endpoint
# entries whose host and port match: exact host (case-insensitive), host
# glob with `.` as separator (`*` is one label, `**` any number), or
# hostless with allowed_ips (any host). The endpoints are the candidates
# whose policy also allows the binary. The connection is allowed iff they
# are not empty; the matched policy is the smallest key among them.
# Candidates without endpoints mean a binary denial (some policy lists the
# destination). (A pair rather than an object: it is cheaper to build.)
# The candidates are an array (one lookup) or a set (all of them); Go reads
# both, and sorts.
#
# Rule indexing on input.lookups picks the definition. The common cases,
# exact host only and host globs only, take no rule in between; all
# lookups at once (hostless endpoints on the port, or an exact host that
# globs may match too) merge them in a set, which drops an endpoint that
# two lookups find.
decision := [found, [entry | some entry in found; binary_allowed(entry)]] if {
	input.lookups == "exact"
	found := data.idx.exact[input.host_port]
}

decision := [found, [entry | some entry in found; binary_allowed(entry)]] if {
	input.lookups == "globs"
	found := [entry |
		some bucket in input.glob_buckets
		some g in data.idx.globs[bucket]
		glob.match(g.pattern, ["."], input.host)
		some entry in g.entries
	]
}

decision := [found, [entry | some entry in found; binary_allowed(entry)]] if {
	input.lookups == "all"
	found := all_candidates
}

all_candidates contains entry if {
	some entry in data.idx.exact[input.host_port]
}

all_candidates contains entry if {
	some entry in data.idx.hostless[input.hostless_port]
}

all_candidates contains entry if {
	some bucket in input.glob_buckets
	some g in data.idx.globs[bucket]
	glob.match(g.pattern, ["."], input.host)
	some entry in g.entries
}

# An endpoint's policy allows the binary when its binaries match the
# executable or one of its ancestors (input.paths): an exact path, or a glob
# with `/` as separator. Command-line paths never grant access and are not
# in the input.
binary_allowed(entry) if {
	some path in input.paths
	entry[2][path]
}

binary_allowed(entry) if {
	some pattern in entry[3]
	some path in input.paths
	glob.match(pattern, ["/"], path)
}

# --- Requests (L7) ---

# input.endpoints are the decision's endpoint entries; input.method is
# upper case.
request_allowed if {
	some entry in input.endpoints
	some rule in entry[4]
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
