package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const agentPolicy = `version: 1
network_policies:
  anthropic:
    endpoints:
      - { host: api.anthropic.com, port: 443 }
    binaries:
      - { path: /usr/bin/node }
  github:
    endpoints:
      - host: api.github.com
        port: 443
        protocol: rest
        enforcement: enforce
        access: read-only
    binaries:
      - { path: /usr/bin/curl }
`

// TestPolicyCheckThroughSidecar: `moat policy check` is served by
// moat-sidecar (the binary that links OPA) and reports decisions with
// OpenShell's reasons and exit codes.
func TestPolicyCheckThroughSidecar(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(agentPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"allowed", []string{"--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, 0,
			"ALLOW api.anthropic.com:443 from /usr/bin/node [policy:anthropic engine:opa]"},
		{"wrong binary", []string{"--binary", "/usr/bin/curl", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"[reason:binary '/usr/bin/curl' not allowed in policy 'anthropic'"},
		{"ancestor grants", []string{"--binary", "/usr/bin/curl", "--ancestor", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, 0,
			"ALLOW"},
		{"unlisted host", []string{"--binary", "/usr/bin/node", "--host", "example.com", "--port", "443"}, 1,
			"endpoint example.com:443 not in policy 'anthropic'; endpoint example.com:443 not in policy 'github'"},
		{"l7 get", []string{"--binary", "/usr/bin/curl", "--host", "api.github.com", "--port", "443", "--method", "GET", "--path", "/repos/x/y"}, 0,
			"ALLOW GET api.github.com:443/repos/x/y"},
		{"l7 post denied", []string{"--binary", "/usr/bin/curl", "--host", "api.github.com", "--port", "443", "--method", "POST", "--path", "/repos/x/y/issues"}, 1,
			"[reason:POST /repos/x/y/issues not permitted by policy]"},
		{"bad input", []string{"--binary", "/usr/bin/curl", "--host", "api.github.com", "--port", "0"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"policy", "check", file}, tt.args...)
			stdout, stderr, code := moat(t, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout %q lacks %q", stdout, tt.want)
			}
		})
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(agentPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := moat(t, "policy", "check", file, "--json", "--binary", "/usr/bin/wget", "--host", "api.github.com", "--port", "443")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
	}
	var d struct{ Action, Policy, Reason, Engine string }
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("decode %q: %v", stdout, err)
	}
	if d.Action != "deny" || d.Engine != "opa" || !strings.HasPrefix(d.Reason, "binary '/usr/bin/wget' not allowed in policy 'github'") {
		t.Errorf("decision = %+v", d)
	}
}

func TestPolicyValidateExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/policies/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example policies")
	}
	stdout, stderr, code := moat(t, append([]string{"policy", "validate"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if n := strings.Count(stdout, ": valid ("); n != len(files) {
		t.Errorf("%d of %d files reported valid:\n%s", n, len(files), stdout)
	}
}
