// Command moat-sidecar is moat's per-sandbox supervisor. It links the OPA
// policy engine, so the policy commands that need a decision engine run
// here; `moat policy check` forwards to it. The egress proxy arrives with
// the network sandbox.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `moat-sidecar: moat's per-sandbox supervisor

Usage:
  moat-sidecar policy check FILE [flags]   decide one connection or request (see 'moat policy help')
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 2 && args[0] == "policy" && args[1] == "check" {
		return check(args[2:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return 2
}
