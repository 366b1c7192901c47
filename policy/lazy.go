package policy

import (
	"regexp"
	"sync"
)

// lazyRegexp compiles expr on first use. Package initialisation stays
// cheap: moat-init links this package (for the Landlock plan) on every
// container start and never validates a policy, and patterns with bounded
// repetition ({0,127}) compile into large programs.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
