package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/moatsandbox/moat/policy"
)

const policyUsage = `Usage:
  moat policy validate FILE...
      Parse and validate policy files. Prints every error and warning with
      file:line:col and key path. Exit 0 when all are valid, 1 otherwise.

  moat policy check FILE --binary PATH [--ancestor PATH]... [--cmdline PATH]...
                    --host HOST --port N [--method M --path P] [--json]
      Decide one connection (or, with --method and --path, one HTTP request)
      as the sandbox's proxy would. Exit 0 allow, 1 deny, 2 bad input.
`

func policyCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "check":
		return forwardToSidecar(append([]string{"policy"}, args...), stderr)
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
	bin, err := sidecarBinary()
	if err != nil {
		fmt.Fprintf(stderr, "moat: %v\n", err)
		return 2
	}
	err = syscall.Exec(bin, append([]string{"moat-sidecar"}, args...), os.Environ())
	fmt.Fprintf(stderr, "moat: exec %s: %v\n", bin, err)
	return 2
}

func sidecarBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "moat-sidecar")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("moat-sidecar")
	if err != nil {
		return "", fmt.Errorf("moat-sidecar not found beside moat or in PATH: %w", err)
	}
	return p, nil
}
