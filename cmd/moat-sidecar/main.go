// Command moat-sidecar is moat's per-sandbox supervisor. It links the OPA
// policy engine, so the policy commands that need a decision engine run
// here; `moat policy check` forwards to it. `moat create` starts one
// `moat-sidecar serve` per sandbox, inside the sandbox's outer network
// namespace (package sidecar).
//
// The Go runtime's reading of the cgroup CPU limit at start (Go 1.25's
// container-aware GOMAXPROCS: four files opened and read, about 0.5 ms of
// every start on the test VM) is switched off below: the sidecar runs on one P
// (serve).
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

const usage = `moat-sidecar: moat's per-sandbox supervisor

Usage:
  moat-sidecar policy check FILE [flags]   decide one connection or request (see 'moat policy help')
  moat-sidecar serve --config FILE [--ready-fd]
                                           serve one sandbox (started by moat create)
`

// The sidecar confines itself from the main goroutine (Harden drops the
// bounding set on the calling thread); keep that on the process's main
// thread, whose status /proc/PID/status shows.
func init() { runtime.LockOSThread() }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 2 && args[0] == "policy" && args[1] == "check" {
		return check(args[2:], stdout, stderr)
	}
	if len(args) >= 1 && args[0] == "serve" {
		return serve(args[1:], stderr)
	}
	fmt.Fprint(stderr, usage)
	return 2
}
