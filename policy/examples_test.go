package policy

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExamplePolicies checks that every policy under examples/policies
// parses with no errors and no warnings: the examples are what users copy.
func TestExamplePolicies(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "examples", "policies", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example policies in examples/policies")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			p, warnings, err := ParseFile(file)
			if err != nil {
				t.Fatalf("invalid:\n%v", err)
			}
			if len(warnings) > 0 {
				lines := make([]string, len(warnings))
				for i, w := range warnings {
					lines[i] = w.String()
				}
				t.Fatalf("%d warnings:\n%s", len(warnings), strings.Join(lines, "\n"))
			}
			if len(p.Network) == 0 {
				t.Errorf("no network_policies")
			}
			if p.Filesystem == nil {
				t.Errorf("no filesystem_policy")
			}
		})
	}
}
