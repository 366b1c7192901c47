package policy

import (
	"regexp"
	"strings"
	"sync"
)

// Glob syntax, shared with OPA's glob.match (and so with OpenShell's Rego):
// `*` matches any run of characters except the separator, `**` any run
// including separators, `?` one non-separator character, `[...]`/`[!...]` a
// character class and `{a,b}` alternatives. Hosts use `.` as separator,
// paths `/`, query values none.

// IsHostGlob reports whether a host (or path) contains glob syntax.
func IsHostGlob(s string) bool { return strings.ContainsAny(s, "*?[{") }

// MatchHost matches a host against an endpoint host or host glob,
// case-insensitively.
func MatchHost(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	if !IsHostGlob(pattern) {
		return pattern == host
	}
	re, err := compileGlob(pattern, '.')
	return err == nil && re.MatchString(host)
}

// MatchPath matches a `/`-separated path (a binary or an HTTP path) against
// a path or path glob. A lone "**" matches everything.
func MatchPath(pattern, path string) bool {
	if pattern == "**" {
		return true
	}
	if !IsHostGlob(pattern) {
		return pattern == path
	}
	re, err := compileGlob(pattern, '/')
	return err == nil && re.MatchString(path)
}

// MatchValue matches a query-parameter value against a glob with no
// separator.
func MatchValue(pattern, value string) bool {
	re, err := compileGlob(pattern, 0)
	return err == nil && re.MatchString(value)
}

// CheckGlob reports why a glob is malformed (unbalanced brackets or
// braces), or nil.
func CheckGlob(pattern string, sep byte) error {
	_, err := compileGlob(pattern, sep)
	return err
}

type globKey struct {
	pattern string
	sep     byte
}

var globCache sync.Map // globKey -> *regexp.Regexp or error

func compileGlob(pattern string, sep byte) (*regexp.Regexp, error) {
	k := globKey{pattern, sep}
	if v, ok := globCache.Load(k); ok {
		if err, isErr := v.(error); isErr {
			return nil, err
		}
		return v.(*regexp.Regexp), nil
	}
	re, err := translateGlob(pattern, sep)
	if err != nil {
		globCache.Store(k, err)
		return nil, err
	}
	globCache.Store(k, re)
	return re, nil
}

type globError string

func (e globError) Error() string { return string(e) }

// translateGlob turns a glob into an anchored regular expression.
func translateGlob(pattern string, sep byte) (*regexp.Regexp, error) {
	notSep := "."
	if sep != 0 {
		notSep = "[^" + regexp.QuoteMeta(string(sep)) + "]"
	}
	var b strings.Builder
	b.WriteString(`^(?s:`)
	depth := 0 // open {...} groups
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '*' && i+1 < len(pattern) && pattern[i+1] == '*':
			b.WriteString(`.*`)
			i++
		case c == '*':
			b.WriteString(notSep + `*`)
		case c == '?':
			b.WriteString(notSep)
		case c == '[':
			end := strings.IndexByte(pattern[i+1:], ']')
			if end < 0 {
				return nil, globError("unclosed '[' in glob " + quote(pattern))
			}
			class := pattern[i+1 : i+1+end]
			if class == "" || class == "!" {
				return nil, globError("empty character class in glob " + quote(pattern))
			}
			b.WriteByte('[')
			if class[0] == '!' {
				b.WriteByte('^')
				class = class[1:]
			}
			for j := 0; j < len(class); j++ {
				if class[j] == '\\' || class[j] == '[' || class[j] == ']' || class[j] == '^' {
					b.WriteByte('\\')
				}
				b.WriteByte(class[j])
			}
			b.WriteByte(']')
			i += end + 1
		case c == '{':
			depth++
			b.WriteString(`(?:`)
		case c == '}':
			if depth == 0 {
				return nil, globError("unmatched '}' in glob " + quote(pattern))
			}
			depth--
			b.WriteByte(')')
		case c == ',' && depth > 0:
			b.WriteByte('|')
		case c == ']':
			return nil, globError("unmatched ']' in glob " + quote(pattern))
		case c == '\\' && i+1 < len(pattern):
			i++
			b.WriteString(regexp.QuoteMeta(string(pattern[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	if depth != 0 {
		return nil, globError("unclosed '{' in glob " + quote(pattern))
	}
	b.WriteString(`)$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, globError("invalid glob " + quote(pattern) + ": " + err.Error())
	}
	return re, nil
}

func quote(s string) string { return "'" + s + "'" }
