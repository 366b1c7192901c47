package policy

import (
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDefaultPolicyMatchesYAML(t *testing.T) {
	parsed, warnings, err := Parse(DefaultPolicyName, []byte(DefaultPolicyYAML))
	if err != nil {
		t.Fatalf("Parse(DefaultPolicyYAML): %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	if got := DefaultPolicy(); !reflect.DeepEqual(got, parsed) {
		t.Errorf("DefaultPolicy() = %+v\nParse(DefaultPolicyYAML) = %+v", got, parsed)
	}
}

func TestDefaultPolicyShape(t *testing.T) {
	p := DefaultPolicy()
	if p.Process != nil {
		t.Error("the default policy must keep the spec's user (no process section)")
	}
	if len(p.Network) != 0 {
		t.Error("the default policy must allow no network")
	}
	if p.Landlock.Hard() {
		t.Error("the default policy must be best_effort")
	}
	// Each call is a fresh value.
	p.Filesystem.ReadOnly = append(p.Filesystem.ReadOnly, "/changed")
	if len(DefaultPolicy().Filesystem.ReadOnly) != 0 {
		t.Error("DefaultPolicy shares state between calls")
	}
	// The baseline comes from the Landlock plan, as optional rules, so
	// images without /app or /sandbox start without warnings.
	plan, findings, err := LandlockPlan(DefaultPolicy(), &specs.Spec{Process: &specs.Process{Cwd: "/", Args: []string{"/bin/sh"}}}, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings {
		if f.Severity == SeverityWarning {
			t.Errorf("finding: %s", f)
		}
	}
	for _, want := range []string{"/usr", "/etc", "/sandbox", "/tmp", "/proc"} {
		found := false
		for _, r := range plan.Rules {
			if r.Path == want {
				found = true
				if !r.Optional {
					t.Errorf("%s is not optional", want)
				}
			}
		}
		if !found {
			t.Errorf("plan lacks baseline path %s", want)
		}
	}
}
