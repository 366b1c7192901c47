package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// reader walks a YAML node tree (JSON is read as YAML), collecting
// diagnostics with positions and key paths instead of stopping at the first
// problem.
type reader struct {
	file  string
	diags []Diagnostic
}

func (r *reader) report(n *yaml.Node, path string, warning bool, format string, args ...any) {
	d := Diagnostic{File: r.file, Path: path, Message: fmt.Sprintf(format, args...), Warning: warning}
	if n != nil {
		d.Line, d.Col = n.Line, n.Column
	}
	r.diags = append(r.diags, d)
}

func (r *reader) errorf(n *yaml.Node, path, format string, args ...any) {
	r.report(n, path, false, format, args...)
}

func (r *reader) warnf(n *yaml.Node, path, format string, args ...any) {
	r.report(n, path, true, format, args...)
}

// failed reports whether any error (not warning) was recorded.
func (r *reader) failed() bool {
	for _, d := range r.diags {
		if !d.Warning {
			return true
		}
	}
	return false
}

// resolve follows aliases so anchors and merges read as plain nodes.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!bool":
			return "a boolean"
		case "!!int", "!!float":
			return "a number"
		}
		return "a string"
	}
	return "an unknown node"
}

// field is one key/value pair of a mapping.
type field struct {
	key   string
	keyN  *yaml.Node
	value *yaml.Node
}

// mapping returns the fields of a mapping node, reporting a wrong kind,
// duplicate keys and keys outside allowed (when allowed is non-nil).
func (r *reader) mapping(n *yaml.Node, path string, allowed ...string) ([]field, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		r.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return nil, false
	}
	seen := make(map[string]bool, len(n.Content)/2)
	var out []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			r.errorf(k, path, "keys must be strings")
			continue
		}
		if k.Tag == "!!merge" {
			r.errorf(k, path, "merge keys ('<<') are not supported")
			continue
		}
		if seen[k.Value] {
			r.errorf(k, join(path, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		if allowed != nil && !contains(allowed, k.Value) {
			r.errorf(k, path, "unknown key %q (expected one of: %s)", k.Value, strings.Join(allowed, ", "))
			continue
		}
		out = append(out, field{key: k.Value, keyN: k, value: v})
	}
	return out, true
}

func (r *reader) sequence(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		r.errorf(n, path, "expected a list, got %s", kindName(n))
		return nil, false
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out, true
}

func (r *reader) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		r.errorf(n, path, "expected a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (r *reader) boolean(n *yaml.Node, path string) (bool, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	}
	r.errorf(n, path, "expected true or false, got %s", kindName(n))
	return false, false
}

func (r *reader) integer(n *yaml.Node, path string, min, max int64) (int64, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err == nil && v >= min && v <= max {
			return v, true
		}
		r.errorf(n, path, "%s is out of range (%d to %d)", n.Value, min, max)
		return 0, false
	}
	r.errorf(n, path, "expected an integer, got %s", kindName(n))
	return 0, false
}

func (r *reader) port(n *yaml.Node, path string) (uint16, bool) {
	v, ok := r.integer(n, path, 1, math.MaxUint16)
	return uint16(v), ok
}

func (r *reader) strings(n *yaml.Node, path string) ([]string, bool) {
	items, ok := r.sequence(n, path)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		if s, ok := r.str(it, index(path, i)); ok {
			out = append(out, s)
		} else {
			return nil, false
		}
	}
	return out, true
}

// join appends a key to a key path, quoting keys that would be ambiguous.
func join(path, key string) string {
	if strings.ContainsAny(key, ".[]\" ") || key == "" {
		key = strconv.Quote(key)
		return path + "[" + key + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
