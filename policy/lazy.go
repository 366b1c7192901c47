package policy

import (
	"regexp"
	"sync"
)

// lazyRegexp compiles expr on first use. Package initialisation stays
// cheap: the moat binary links this package for every OCI command, most of
// which never validate a policy, and patterns with bounded repetition
// ({0,127}) compile into large programs.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
