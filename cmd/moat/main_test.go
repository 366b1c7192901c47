package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	good := write(t, "good.yaml", "version: 1\nnetwork_policies:\n  a:\n    endpoints: [{host: a.example.com, port: 443, tls: terminate}]\n    binaries: [{path: /usr/bin/curl}]\n")
	bad := write(t, "bad.yaml", "version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: '*', port: 443}\n      - {host: a.example.com, port: 1, ports: [2]}\n    binaries: [{path: /usr/bin/curl}]\n")
	tests := []struct {
		name        string
		args        []string
		code        int
		out, errOut []string
	}{
		{"valid with warning", []string{"policy", "validate", good}, 0,
			[]string{good + ": valid (1 warnings)"}, []string{"good.yaml:4:55: warning: network_policies.a.endpoints[0].tls"}},
		{"invalid lists every error", []string{"policy", "validate", bad}, 1,
			[]string{bad + ": invalid (2 errors)"}, []string{"bad.yaml:5:16: network_policies.a.endpoints[0].host", "bad.yaml:6:9: network_policies.a.endpoints[1]: 'port' and 'ports' are mutually exclusive"}},
		{"one bad file fails the run", []string{"policy", "validate", good, bad}, 1, []string{"valid", "invalid"}, nil},
		{"missing file", []string{"policy", "validate", "/nonexistent/p.yaml"}, 1, nil, []string{"no such file"}},
		{"no files", []string{"policy", "validate"}, 2, nil, []string{"no files given"}},
		{"unknown policy command", []string{"policy", "frob"}, 2, nil, []string{`unknown command "frob"`}},
		{"unknown command", []string{"frob"}, 2, nil, []string{`unknown command "frob"`}},
		{"no args", nil, 2, nil, []string{"Usage:"}},
		{"version", []string{"version"}, 0, []string{"moat version"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.out {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q lacks %q", stdout.String(), w)
				}
			}
			for _, w := range tt.errOut {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", stderr.String(), w)
				}
			}
		})
	}
}
