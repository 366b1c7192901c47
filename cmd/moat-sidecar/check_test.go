package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// examples is where the example policies live, relative to this package.
const examples = "../../examples/policies/"

func runCheck(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = check(args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestCheckExamples decides connections and requests against the example
// policies: for each, what it must allow and what it must deny, with the
// deny reason the proxy would log.
func TestCheckExamples(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		args   []string
		code   int    // 0 allow (or audit), 1 deny
		reason string // substring of the reason in stdout; "" for none expected
	}{
		// claude-code.yaml
		{"claude node to api", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, 0, ""},
		{"claude local node to statsig", "claude-code.yaml",
			[]string{"--binary", "/usr/local/bin/node", "--host", "statsig.anthropic.com", "--port", "443"}, 0, ""},
		{"claude host is case-insensitive", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "API.Anthropic.COM", "--port", "443"}, 0, ""},
		{"claude native installer version", "claude-code.yaml",
			[]string{"--binary", "/home/agent/.local/share/claude/versions/1.0.72", "--host", "api.anthropic.com", "--port", "443"}, 0, ""},
		{"claude child process through ancestor", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/curl", "--ancestor", "/bin/bash", "--ancestor", "/usr/bin/node",
				"--host", "sentry.io", "--port", "443"}, 0, ""},
		{"claude unlisted host", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "exfil.example.net", "--port", "443"}, 1,
			"endpoint exfil.example.net:443 not in policy 'claude_code'"},
		{"claude wrong port", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "80"}, 1,
			"endpoint api.anthropic.com:80 not in policy 'claude_code'"},
		{"claude wrong binary", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/curl", "--ancestor", "/bin/bash", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"binary '/usr/bin/curl' not allowed in policy 'claude_code' (ancestors: [/bin/bash], cmdline: [])"},
		{"claude cmdline never grants", "claude-code.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--cmdline", "/usr/local/bin/claude",
				"--host", "api.anthropic.com", "--port", "443"}, 1,
			"binary '/usr/bin/python3.11' not allowed in policy 'claude_code' (ancestors: [], cmdline: [/usr/local/bin/claude])"},
		{"claude version glob is one segment", "claude-code.yaml",
			[]string{"--binary", "/home/agent/.local/share/claude/versions/1.0.72/helper", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"binary '/home/agent/.local/share/claude/versions/1.0.72/helper' not allowed in policy 'claude_code'"},
		{"claude version glob is under /home only", "claude-code.yaml",
			[]string{"--binary", "/root/.local/share/claude/versions/1.0.72", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"binary '/root/.local/share/claude/versions/1.0.72' not allowed in policy 'claude_code'"},

		// codex.yaml
		{"codex npm vendored binary", "codex.yaml",
			[]string{"--binary", "/usr/lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/codex/codex",
				"--ancestor", "/usr/bin/node", "--host", "api.openai.com", "--port", "443"}, 0, ""},
		{"codex npm vendored binary under /usr/local", "codex.yaml",
			[]string{"--binary", "/usr/local/lib/node_modules/@openai/codex/vendor/aarch64-unknown-linux-musl/codex/codex",
				"--host", "auth.openai.com", "--port", "443"}, 0, ""},
		{"codex release binary", "codex.yaml",
			[]string{"--binary", "/usr/local/bin/codex", "--host", "chatgpt.com", "--port", "443"}, 0, ""},
		{"codex node launcher alone", "codex.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "api.openai.com", "--port", "443"}, 1,
			"binary '/usr/bin/node' not allowed in policy 'codex'"},
		{"codex unlisted host", "codex.yaml",
			[]string{"--binary", "/usr/local/bin/codex", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"endpoint api.anthropic.com:443 not in policy 'codex'"},
		{"codex wrong port", "codex.yaml",
			[]string{"--binary", "/usr/local/bin/codex", "--host", "api.openai.com", "--port", "8443"}, 1,
			"endpoint api.openai.com:8443 not in policy 'codex'"},

		// copilot.yaml
		{"copilot npm native binary", "copilot.yaml",
			[]string{"--binary", "/usr/lib/node_modules/@github/copilot/node_modules/@github/copilot-linux-x64/copilot",
				"--host", "api.individual.githubcopilot.com", "--port", "443"}, 0, ""},
		{"copilot per-user install", "copilot.yaml",
			[]string{"--binary", "/home/dev/.local/bin/copilot", "--host", "api.githubcopilot.com", "--port", "443"}, 0, ""},
		{"copilot node", "copilot.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "github.com", "--port", "443"}, 0, ""},
		{"copilot unlisted sibling host", "copilot.yaml",
			[]string{"--binary", "/usr/local/bin/copilot", "--host", "uploads.githubcopilot.com", "--port", "443"}, 1,
			"endpoint uploads.githubcopilot.com:443 not in policy 'copilot'"},
		{"copilot wrong binary", "copilot.yaml",
			[]string{"--binary", "/usr/bin/curl", "--host", "api.github.com", "--port", "443"}, 1,
			"binary '/usr/bin/curl' not allowed in policy 'copilot'"},
		{"copilot wrong port", "copilot.yaml",
			[]string{"--binary", "/usr/local/bin/copilot", "--host", "github.com", "--port", "22"}, 1,
			"endpoint github.com:22 not in policy 'copilot'"},

		// git-readonly.yaml
		{"git helper under git", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443"}, 0, ""},
		{"git helper alone", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-http", "--host", "github.com", "--port", "443"}, 0, ""},
		{"git fetch refs", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo.git/info/refs?service=git-upload-pack"}, 0, ""},
		{"git fetch refs without .git", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo/info/refs?service=git-upload-pack"}, 0, ""},
		{"git HEAD allowed where GET is", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/git", "--host", "github.com", "--port", "443",
				"--method", "HEAD", "--path", "/org/repo.git/info/refs?service=git-upload-pack"}, 0, ""},
		{"git fetch pack", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443",
				"--method", "POST", "--path", "/org/repo.git/git-upload-pack"}, 0, ""},
		{"git push refs", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo.git/info/refs?service=git-receive-pack"}, 1,
			"GET /org/repo.git/info/refs not permitted by policy"},
		{"git refs without service", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/git", "--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo.git/info/refs"}, 1,
			"GET /org/repo.git/info/refs not permitted by policy"},
		{"git push pack", "git-readonly.yaml",
			[]string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
				"--host", "github.com", "--port", "443",
				"--method", "POST", "--path", "/org/repo.git/git-receive-pack"}, 1,
			"POST /org/repo.git/git-receive-pack not permitted by policy"},
		{"git web page", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/git", "--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo"}, 1,
			"GET /org/repo not permitted by policy"},
		{"git over ssh port", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/ssh", "--ancestor", "/usr/bin/git", "--host", "github.com", "--port", "22"}, 1,
			"endpoint github.com:22 not in policy 'git_readonly'"},
		{"git unlisted host", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/git", "--host", "gitlab.com", "--port", "443"}, 1,
			"endpoint gitlab.com:443 not in policy 'git_readonly'"},
		{"git wrong binary", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/curl", "--ancestor", "/bin/sh", "--host", "github.com", "--port", "443"}, 1,
			"binary '/usr/bin/curl' not allowed in policy 'git_readonly' (ancestors: [/bin/sh], cmdline: [])"},
		{"git request by wrong binary", "git-readonly.yaml",
			[]string{"--binary", "/usr/bin/curl", "--host", "github.com", "--port", "443",
				"--method", "GET", "--path", "/org/repo.git/info/refs?service=git-upload-pack"}, 1,
			"binary '/usr/bin/curl' not allowed in policy 'git_readonly'"},

		// package-installs.yaml
		{"pip index", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--host", "pypi.org", "--port", "443",
				"--method", "GET", "--path", "/simple/requests/"}, 0, ""},
		{"pip download from venv", "package-installs.yaml",
			[]string{"--binary", "/sandbox/project/.venv/bin/python3", "--host", "files.pythonhosted.org", "--port", "443",
				"--method", "GET", "--path", "/packages/ab/cd/requests-2.32.3-py3-none-any.whl"}, 0, ""},
		{"pip local python", "package-installs.yaml",
			[]string{"--binary", "/usr/local/bin/python3.12", "--host", "pypi.org", "--port", "443"}, 0, ""},
		{"npm metadata", "package-installs.yaml",
			[]string{"--binary", "/usr/local/bin/node", "--host", "registry.npmjs.org", "--port", "443",
				"--method", "GET", "--path", "/left-pad"}, 0, ""},
		{"pypi post denied", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--host", "pypi.org", "--port", "443",
				"--method", "POST", "--path", "/legacy/"}, 1,
			"POST /legacy/ not permitted by policy"},
		{"npm publish denied", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/node", "--host", "registry.npmjs.org", "--port", "443",
				"--method", "PUT", "--path", "/left-pad"}, 1,
			"PUT /left-pad not permitted by policy"},
		{"python to npm registry", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--host", "registry.npmjs.org", "--port", "443"}, 1,
			"binary '/usr/bin/python3.11' not allowed in policy 'npm'"},
		{"pypi upload host unlisted", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--host", "upload.pypi.org", "--port", "443"}, 1,
			"endpoint upload.pypi.org:443 not in policy 'npm'; endpoint upload.pypi.org:443 not in policy 'pypi'"},
		{"pypi plain http", "package-installs.yaml",
			[]string{"--binary", "/usr/bin/python3.11", "--host", "pypi.org", "--port", "80"}, 1,
			"endpoint pypi.org:80 not in policy"},

		// moat-extras.yaml
		{"extras gh", "moat-extras.yaml",
			[]string{"--binary", "/usr/bin/gh", "--host", "api.github.com", "--port", "443"}, 0, ""},
		{"extras node to anthropic", "moat-extras.yaml",
			[]string{"--binary", "/usr/local/bin/node", "--host", "api.anthropic.com", "--port", "443"}, 0, ""},
		{"extras gh to anthropic", "moat-extras.yaml",
			[]string{"--binary", "/usr/bin/gh", "--host", "api.anthropic.com", "--port", "443"}, 1,
			"binary '/usr/bin/gh' not allowed in policy 'claude_code'"},
		{"extras unlisted host", "moat-extras.yaml",
			[]string{"--binary", "/usr/bin/gh", "--host", "uploads.github.com", "--port", "443"}, 1,
			"endpoint uploads.github.com:443 not in policy 'claude_code'; endpoint uploads.github.com:443 not in policy 'github_cli'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{examples + tt.file}, tt.args...)
			stdout, stderr, code := runCheck(t, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if stderr != "" {
				t.Errorf("stderr not empty (an example policy warned?): %s", stderr)
			}
			wantAction := "ALLOW "
			if tt.code == 1 {
				wantAction = "DENY "
			}
			if !strings.HasPrefix(stdout, wantAction) {
				t.Errorf("stdout = %q, want it to start with %q", stdout, wantAction)
			}
			if tt.reason != "" && !strings.Contains(stdout, "[reason:"+tt.reason) {
				t.Errorf("stdout = %q, want reason %q", stdout, tt.reason)
			}
			if tt.code == 0 && strings.Contains(stdout, "[reason:") {
				t.Errorf("allowed with a reason: %q", stdout)
			}
		})
	}
}

type jsonOut struct {
	Action     string   `json:"action"`
	Policy     string   `json:"policy"`
	Reason     string   `json:"reason"`
	Engine     string   `json:"engine"`
	Protocol   string   `json:"protocol"`
	Enforce    bool     `json:"enforce"`
	AllowedIPs []string `json:"allowed_ips"`
}

func decodeJSON(t *testing.T, stdout string) jsonOut {
	t.Helper()
	var d jsonOut
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decode %q: %v", stdout, err)
	}
	return d
}

func TestCheckJSON(t *testing.T) {
	git := examples + "git-readonly.yaml"
	helper := []string{"--binary", "/usr/lib/git-core/git-remote-https", "--ancestor", "/usr/bin/git",
		"--host", "github.com", "--port", "443", "--json"}

	stdout, stderr, code := runCheck(t, append([]string{git, "--method", "POST", "--path", "/org/repo.git/git-receive-pack"}, helper...)...)
	if code != 1 {
		t.Fatalf("push: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	d := decodeJSON(t, stdout)
	want := jsonOut{Action: "deny", Policy: "git_readonly", Reason: "POST /org/repo.git/git-receive-pack not permitted by policy", Engine: "opa"}
	if d.Action != want.Action || d.Policy != want.Policy || d.Reason != want.Reason || d.Engine != want.Engine {
		t.Errorf("push: decision = %+v, want %+v", d, want)
	}

	stdout, stderr, code = runCheck(t, append([]string{git, "--method", "GET", "--path", "/org/repo.git/info/refs?service=git-upload-pack"}, helper...)...)
	if code != 0 {
		t.Fatalf("fetch: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	d = decodeJSON(t, stdout)
	if d.Action != "allow" || d.Policy != "git_readonly" || d.Engine != "opa" || d.Reason != "" ||
		d.Protocol != "rest" || !d.Enforce {
		t.Errorf("fetch: decision = %+v, want allow by git_readonly, rest, enforced", d)
	}

	// Flags may come before the file, too.
	stdout, _, code = runCheck(t, "--json", "--binary", "/usr/bin/node", "--host", "exfil.example.net", "--port", "443",
		examples+"claude-code.yaml")
	if code != 1 {
		t.Fatalf("unlisted: exit %d, want 1", code)
	}
	d = decodeJSON(t, stdout)
	if d.Action != "deny" || d.Policy != "" || d.Engine != "opa" || d.Reason != "endpoint exfil.example.net:443 not in policy 'claude_code'" {
		t.Errorf("unlisted: decision = %+v", d)
	}
}

// TestCheckAuditDefault: an L7 endpoint without `enforcement` audits, so a
// request no rule allows is let through (exit 0) and reported as AUDIT
// with the reason, and the parser warns about the missing enforcement.
func TestCheckAuditDefault(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.yaml")
	doc := `version: 1
network_policies:
  api:
    endpoints:
      - { host: api.example.com, port: 443, protocol: rest, access: read-only }
    binaries: [ { path: /usr/bin/curl } ]
`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCheck(t, file, "--binary", "/usr/bin/curl", "--host", "api.example.com", "--port", "443",
		"--method", "DELETE", "--path", "/v1/things/1")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "AUDIT ") || !strings.Contains(stdout, "[reason:DELETE /v1/things/1 not permitted by policy]") {
		t.Errorf("stdout = %q, want an AUDIT decision with the request reason", stdout)
	}
	if !strings.Contains(stderr, "defaults to audit") {
		t.Errorf("stderr = %q, want the missing-enforcement warning", stderr)
	}
}

func TestCheckBadInput(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	doc := `version: 1
network_policies:
  api:
    endpoints:
      - { host: "*.com", port: 443 }
    binaries: [ { path: curl } ]
`
	if err := os.WriteFile(invalid, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	good := examples + "claude-code.yaml"
	tests := []struct {
		name   string
		args   []string
		stderr string // substring of stderr
	}{
		{"missing --binary", []string{good, "--host", "api.anthropic.com", "--port", "443"}, "--binary is required"},
		{"missing --host", []string{good, "--binary", "/usr/bin/node", "--port", "443"}, "--host is required"},
		{"missing --port", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com"}, "--port must be 1 to 65535"},
		{"port 0", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "0"}, "--port must be 1 to 65535"},
		{"port too large", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "65536"}, "--port must be 1 to 65535"},
		{"port not a number", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "https"}, "invalid value"},
		{"no file", []string{"--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, "exactly one policy FILE"},
		{"two files", []string{good, good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, "exactly one policy FILE"},
		{"unknown file", []string{filepath.Join(dir, "nope.yaml"), "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443"}, "no such file"},
		{"invalid policy", []string{invalid, "--binary", "/usr/bin/curl", "--host", "api.example.com", "--port", "443"}, "covers a whole top-level domain"},
		{"method without path", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443", "--method", "GET"}, "--method and --path go together"},
		{"relative path", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443", "--method", "GET", "--path", "v1/messages"}, "--path must start with '/'"},
		{"bad query", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443", "--method", "GET", "--path", "/v1?x=%zz"}, "bad query string"},
		{"unknown flag", []string{good, "--binary", "/usr/bin/node", "--host", "api.anthropic.com", "--port", "443", "--verbose"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCheck(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
		})
	}
	// The invalid policy's every error is reported, located.
	_, stderr, _ := runCheck(t, invalid, "--binary", "/usr/bin/curl", "--host", "api.example.com", "--port", "443")
	for _, want := range []string{invalid + ":5:", "invalid.yaml:6:", "is not absolute"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr = %q, want %q", stderr, want)
		}
	}
}
