package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/runtime"
	"github.com/moatsandbox/moat/sidecar/control"
)

const policyUsage = `Usage:
  moat policy validate FILE...
      Parse and validate policy files. Prints every error and warning with
      file:line:col and key path. Exit 0 when all are valid, 1 otherwise.

  moat policy check FILE --binary PATH [--ancestor PATH]... [--cmdline PATH]...
                    --host HOST --port N [--method M --path P] [--json]
      Decide one connection (or, with --method and --path, one HTTP request)
      as the sandbox's proxy would. Exit 0 allow, 1 deny, 2 bad input.

  moat policy show ID
      Print the network policy container ID's sandbox enforces now, and
      where it came from.

  moat policy apply ID FILE
      Validate FILE and swap it in as the sandbox's network policy, without
      restarting anything. An invalid file is refused and the policy in
      force stays; open tunnels the new policy no longer allows are closed.
      Filesystem, process and Landlock sections cannot change while the
      container runs and are ignored. Exit 0 applied, 1 refused.
`

func policyCmd(args []string, stdout, stderr io.Writer, rt *runtime.Runtime) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "check":
		return forwardToSidecar(append([]string{"policy"}, args...), stderr)
	case "show", "apply":
		if rt == nil {
			fmt.Fprintln(stderr, "moat policy: internal error: no runtime options")
			return 2
		}
		return livePolicy(rt, args, stdout, stderr)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, policyUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "moat policy: unknown command %q\n\n%s", args[0], policyUsage)
		return 2
	}
}

// validate parses every file and prints all diagnostics.
func validate(files []string, stdout, stderr io.Writer) int {
	if len(files) == 0 {
		fmt.Fprintf(stderr, "moat policy validate: no files given\n\n%s", policyUsage)
		return 2
	}
	status := 0
	for _, f := range files {
		_, warnings, err := policy.ParseFile(f)
		var perr *policy.Error
		switch {
		case errors.As(err, &perr):
			for _, d := range perr.Diagnostics {
				fmt.Fprintln(stderr, d)
			}
			fmt.Fprintf(stdout, "%s: invalid (%d errors)\n", f, countErrors(perr.Diagnostics))
			status = 1
		case err != nil:
			fmt.Fprintf(stderr, "%s: %v\n", f, err)
			status = 1
		default:
			for _, d := range warnings {
				fmt.Fprintln(stderr, d)
			}
			fmt.Fprintf(stdout, "%s: valid (%d warnings)\n", f, len(warnings))
		}
	}
	return status
}

func countErrors(diags []policy.Diagnostic) int {
	n := 0
	for _, d := range diags {
		if !d.Warning {
			n++
		}
	}
	return n
}

// forwardToSidecar replaces this process with `moat-sidecar ARGS...`, which
// links the OPA engine. It looks beside this executable first, then in PATH.
func forwardToSidecar(args []string, stderr io.Writer) int {
	bin, err := runtime.SidecarBinary()
	if err != nil {
		fmt.Fprintf(stderr, "moat: %v\n", err)
		return 2
	}
	err = syscall.Exec(bin, append([]string{"moat-sidecar"}, args...), os.Environ())
	fmt.Fprintf(stderr, "moat: exec %s: %v\n", bin, err)
	return 2
}

// livePolicy runs `moat policy show ID` and `moat policy apply ID FILE`
// against the sandbox's sidecar.
func livePolicy(rt *runtime.Runtime, args []string, stdout, stderr io.Writer) int {
	op := args[0]
	want := map[string]int{"show": 2, "apply": 3}[op]
	if len(args) != want {
		fmt.Fprintf(stderr, "moat policy %s: wrong arguments\n\n%s", op, policyUsage)
		return 2
	}
	info, err := rt.Sandbox(args[1])
	if err != nil {
		fmt.Fprintf(stderr, "moat policy %s: %v\n", op, err)
		return 1
	}
	if info.Sidecar == nil {
		fmt.Fprintf(stderr, "moat policy %s: container %s has no network egress (no sidecar); its policy is fixed at create\n", op, args[1])
		return 1
	}
	req := control.Request{Op: control.OpShow}
	if op == "apply" {
		data, err := os.ReadFile(args[2])
		if err != nil {
			fmt.Fprintf(stderr, "moat policy apply: %v\n", err)
			return 1
		}
		// Validate here first, so that errors print with positions even
		// when the sidecar is down.
		_, warnings, err := policy.Parse(args[2], data)
		var perr *policy.Error
		if errors.As(err, &perr) {
			for _, d := range perr.Diagnostics {
				fmt.Fprintln(stderr, d)
			}
			fmt.Fprintf(stderr, "moat policy apply: %s is invalid; the policy in force is unchanged\n", args[2])
			return 1
		} else if err != nil {
			fmt.Fprintf(stderr, "moat policy apply: %v\n", err)
			return 1
		}
		for _, d := range warnings {
			fmt.Fprintln(stderr, d)
		}
		req = control.Request{Op: control.OpApply, Policy: string(data), Name: args[2]}
	}
	resp, err := control.Call(info.Sidecar.Socket, req)
	if err != nil {
		fmt.Fprintf(stderr, "moat policy %s: %v\n", op, err)
		return 1
	}
	if op == "apply" {
		// The sidecar runs unprivileged; the policy file it started from
		// is kept in step here, for `moat policy show` after a restart.
		if f := info.Sidecar.PolicyFile; f != "" {
			if err := os.WriteFile(f+".new", []byte(req.Policy), 0o600); err == nil {
				_ = os.Rename(f+".new", f)
			}
		}
		fmt.Fprintf(stdout, "applied %s to %s (revision %d, %d tunnels closed)\n", args[2], args[1], resp.Revision, resp.Closed)
		return 0
	}
	fmt.Fprintf(stdout, "# policy of %s: %s (revision %d)\n", args[1], resp.Source, resp.Revision)
	if resp.Policy == "" {
		fmt.Fprintln(stdout, "# moat's embedded default policy")
		return 0
	}
	io.WriteString(stdout, resp.Policy)
	return 0
}
