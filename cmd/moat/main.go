// Command moat is moat's runtime CLI: a runc-compatible OCI runtime
// (create, start, run, state, kill, delete, exec, ps, list, pause, resume,
// events, update, features, spec, and `init`, libcontainer's re-exec) that
// Docker, containerd's runc shim and any runc user can call instead of
// runc, plus the user commands `moat policy validate|check` and
// `moat version`.
//
// The binary stays free of OPA and containerd so that every container
// start, which execs it several times, pays no start-up cost for them:
// commands that need the policy engine (`moat policy check`) are served by
// moat-sidecar. The container commands are thin: each maps its flags onto
// one call into package runtime, the only package importing libcontainer.
//
// Go 1.25's container-aware GOMAXPROCS is switched off below: each moat
// command lives for milliseconds, too short for the cgroup CPU limit to
// matter. (Go 1.26's runtime still reads the limit once at start, to count
// the setting's effect, so this saves no system calls.)
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"io"
	"os"

	"github.com/moatsandbox/moat/runtime"
)

const usage = `moat: an OCI runtime that makes any container a sandbox for an AI agent

Usage:
  moat [global options] COMMAND [options] ...   runc-compatible container commands
                                      (run 'moat help' for the list)
  moat policy validate FILE...        check policy files (exit 0 valid, 1 invalid)
  moat policy check FILE [flags]      decide one connection or request against a policy
  moat policy show ID                 print the network policy a sandbox enforces
  moat policy apply ID FILE           swap a running sandbox's network policy
  moat denials ID [--json] [--follow] print a sandbox's refused connections
  moat version                        print the version

Run 'moat policy' for the policy commands' flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	// libcontainer starts each container process as `moat init` (after
	// nsenter's constructor has entered the container's namespaces);
	// runtime.Init takes over and never returns.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		runtime.Init()
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs one moat command and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		io.WriteString(stderr, usage)
		return 2
	}
	switch args[0] {
	case "policy":
		// show and apply talk to a running sandbox, found with the global
		// options (--config); the others need none.
		if len(args) < 2 || (args[1] != "show" && args[1] != "apply") {
			return policyCmd(args[1:], stdout, stderr, nil)
		}
	case "version", "--version", "-v":
		printVersion(stdout)
		return 0
	}
	return runtimeCmd(args, stdout, stderr)
}
