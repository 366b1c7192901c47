package policy

import (
	"fmt"
	"strings"
)

// Diagnostic is one problem found in a policy document, located by file,
// line, column and key path, e.g.
//
//	policy.yaml:14:9: network_policies.github.endpoints[0]: 'port' and 'ports' are mutually exclusive
type Diagnostic struct {
	File    string
	Line    int
	Col     int
	Path    string // key path, e.g. network_policies.github.endpoints[0].host
	Message string
	Warning bool // a warning does not make the document invalid
}

func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Col)
	}
	b.WriteString(": ")
	if d.Warning {
		b.WriteString("warning: ")
	}
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Error is returned for an invalid document; it carries every error found,
// not just the first.
type Error struct {
	Diagnostics []Diagnostic
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Diagnostics))
	for i, d := range e.Diagnostics {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}
