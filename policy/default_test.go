package policy

import (
	"reflect"
	"testing"
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
	p.Filesystem.ReadOnly[0] = "/changed"
	if DefaultPolicy().Filesystem.ReadOnly[0] != "/usr" {
		t.Error("DefaultPolicy shares state between calls")
	}
}
