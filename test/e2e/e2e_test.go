// Package e2e runs moat's built binaries the way users run them.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "moat-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, name := range []string{"moat", "moat-sidecar"} {
		cmd := exec.Command("go", "build", "-tags", moatBuildTags, "-o", filepath.Join(dir, name), "../../cmd/"+name)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if name == "moat-sidecar" {
			// It drops privileges with AllThreadsSyscall, which cgo disables.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
			return 1
		}
	}
	binDir = dir
	return m.Run()
}

// moat runs the built moat binary and returns its output and exit code.
func moat(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "moat"), args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin") // moat-sidecar must be found beside moat
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run moat %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}
