package policy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

// wrap builds a one-policy document around an endpoint (indented YAML).
func wrap(endpoint string) string {
	return "version: 1\nnetwork_policies:\n  k:\n    endpoints:\n      - " +
		strings.ReplaceAll(strings.TrimSpace(endpoint), "\n", "\n        ") +
		"\n    binaries:\n      - path: /usr/bin/curl\n"
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in one error line
	}{
		{"port and ports", wrap("host: a.example.com\nport: 443\nports: [80]"),
			[]string{"p.yaml:5:9: network_policies.k.endpoints[0]: 'port' and 'ports' are mutually exclusive"}},
		{"no port", wrap("host: a.example.com"), []string{"endpoint needs 'port' or 'ports'"}},
		{"port out of range", wrap("host: a.example.com\nport: 70000"), []string{"endpoints[0].port: 70000 is out of range"}},
		{"port zero", wrap("host: a.example.com\nport: 0"), []string{"out of range"}},
		{"port string", wrap("host: a.example.com\nport: https"), []string{"endpoints[0].port: expected an integer, got a string"}},
		{"empty ports", wrap("host: a.example.com\nports: []"), []string{"'ports' must not be empty"}},
		{"host star", wrap("host: '*'\nport: 443"), []string{"matches every host"}},
		{"host double star", wrap("host: '**'\nport: 443"), []string{"matches every host"}},
		{"tld wildcard", wrap("host: '*.com'\nport: 443"), []string{"covers a whole top-level domain"}},
		{"tld wildcard double", wrap("host: '**.co'\nport: 443"), []string{"covers a whole top-level domain"}},
		{"inner wildcard", wrap("host: 'api.*.example.com'\nport: 443"), []string{"must start with '*.' or '**.'"}},
		{"prefix wildcard", wrap("host: '*-aiplatform.googleapis.com'\nport: 443"), []string{"must start with '*.' or '**.'"}},
		{"url host", wrap("host: https://api.github.com\nport: 443"), []string{"is a URL"}},
		{"host with port", wrap("host: api.github.com:443\nport: 443"), []string{"includes a port"}},
		{"hostless without ips", wrap("port: 443"), []string{"endpoint needs 'host'"}},
		{"rules with access", wrap("host: a.example.com\nport: 443\nprotocol: rest\naccess: full\nrules:\n  - allow: {method: GET, path: /}"),
			[]string{"'rules' and 'access' are mutually exclusive"}},
		{"protocol alone", wrap("host: a.example.com\nport: 443\nprotocol: rest"), []string{"'protocol' requires 'rules' or 'access'"}},
		{"empty rules", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules: []"), []string{"'rules' must not be empty"}},
		{"sql enforce", wrap("host: db.example.com\nport: 5432\nprotocol: sql\nenforcement: enforce\naccess: full"), []string{"'protocol: sql' cannot be enforced"}},
		{"bad protocol", wrap("host: a.example.com\nport: 443\nprotocol: grpc\naccess: full"), []string{`unknown value "grpc"`}},
		{"bad enforcement", wrap("host: a.example.com\nport: 443\nprotocol: rest\nenforcement: block\naccess: full"), []string{`unknown value "block"`}},
		{"bad access", wrap("host: a.example.com\nport: 443\nprotocol: rest\naccess: admin"), []string{`unknown value "admin"`}},
		{"bad tls", wrap("host: a.example.com\nport: 443\ntls: mitm"), []string{`unknown value "mitm"`}},
		{"rule without method", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules:\n  - allow: {path: /x}"), []string{"rule needs 'method'"}},
		{"rule without path", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules:\n  - allow: {method: GET}"), []string{"rule needs 'path'"}},
		{"rule unknown key", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules:\n  - deny: {method: GET, path: /}"), []string{`unknown key "deny"`}},
		{"bad query matcher", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules:\n  - allow: {method: GET, path: /, query: {tag: [a]}}"),
			[]string{"query matcher must be a glob string or {any: [globs]}"}},
		{"empty any", wrap("host: a.example.com\nport: 443\nprotocol: rest\nrules:\n  - allow: {method: GET, path: /, query: {tag: {any: []}}}"),
			[]string{"'any' must not be empty"}},
		{"allowed_ips loopback", wrap("host: 127.0.0.1\nport: 80\nallowed_ips: [127.0.0.0/8]"), []string{"overlaps 127.0.0.0/8, which is always blocked"}},
		{"allowed_ips everything", wrap("port: 80\nallowed_ips: [0.0.0.0/0]"), []string{"always blocked"}},
		{"allowed_ips metadata", wrap("port: 80\nallowed_ips: [169.254.169.254]"), []string{"overlaps 169.254.0.0/16"}},
		{"allowed_ips mapped loopback", wrap("port: 80\nallowed_ips: ['::ffff:127.0.0.1']"), []string{"always blocked"}},
		{"allowed_ips v6 link-local", wrap("port: 80\nallowed_ips: ['fe80::/64']"), []string{"always blocked"}},
		{"allowed_ips garbage", wrap("port: 80\nallowed_ips: [10.0.0.300]"), []string{"is not an IP address or CIDR"}},
		{"unknown endpoint key", wrap("host: a.example.com\nport: 443\nmethod: GET"), []string{`endpoints[0]: unknown key "method"`}},
		{"binary relative", "version: 1\nnetwork_policies:\n  k:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: [{path: curl}]\n",
			[]string{"binaries[0].path: path \"curl\" is not absolute"}},
		{"binary dotdot", "version: 1\nnetwork_policies:\n  k:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: [{path: /usr/../bin/sh}]\n",
			[]string{"contains '..'"}},
		{"binary string", "version: 1\nnetwork_policies:\n  k:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: [/usr/bin/curl]\n",
			[]string{"binaries[0]: expected a mapping, got a string"}},
		{"missing version", "network_policies: {}\n", []string{"missing required key 'version'"}},
		{"version 2", "version: 2\n", []string{"p.yaml:1:10: version: unsupported version 2"}},
		{"unknown top key", "version: 1\nnetwork_policy: {}\n", []string{`p.yaml:2:1: unknown key "network_policy"`}},
		{"relative fs path", "version: 1\nfilesystem_policy:\n  read_only: [usr]\n", []string{"filesystem_policy.read_only[0]: path \"usr\" is not absolute"}},
		{"dotdot fs path", "version: 1\nfilesystem_policy:\n  read_write: [/sandbox/../etc]\n", []string{"contains '..'"}},
		{"rw root", "version: 1\nfilesystem_policy:\n  read_write: [/]\n", []string{"read_write may not be '/'"}},
		{"include_workdir string", "version: 1\nfilesystem_policy:\n  include_workdir: yes please\n", []string{"expected true or false"}},
		{"bad user", "version: 1\nprocess:\n  run_as_user: 'a b'\n", []string{"neither a user/group name nor a numeric id"}},
		{"duplicate key", "version: 1\nversion: 1\n", []string{"p.yaml:2:1: version: duplicate key"}},
		{"syntax", "version: 1\nnetwork_policies: [\n", []string{"syntax error"}},
		{"empty", "  \n", []string{"empty policy document"}},
		{"two documents", "version: 1\n---\nversion: 1\n", []string{"more than one YAML document"}},
		{"not a mapping", "- version\n", []string{"expected a mapping, got a list"}},
		{"credential without hosts", "version: 1\ncredentials:\n  gh: {source: env:GH}\n", []string{"credential needs 'hosts'"}},
		{"credential bad source", "version: 1\ncredentials:\n  gh: {source: 'file:../x', hosts: [api.github.com]}\n", []string{"not a path"}},
		{"credential bad host", "version: 1\ncredentials:\n  gh: {source: env:GH, hosts: ['*']}\n", []string{"matches every host"}},
		{"credential env clash", "version: 1\ncredentials:\n  gh: {source: env:A, hosts: [a.example.com], env: T}\n  gl: {source: env:B, hosts: [b.example.com], env: T}\n",
			[]string{"already used by credential"}},
		{"route bad protocol", "version: 1\ninference:\n  routes:\n    - {endpoint: 'http://127.0.0.1:1/v1', model: m, protocols: [grpc]}\n", []string{`unknown protocol "grpc"`}},
		{"route bad endpoint", "version: 1\ninference:\n  routes:\n    - {endpoint: 'ftp://x', model: m, protocols: [model_discovery]}\n", []string{"must be an http://"}},
		{"route key and env", "version: 1\ninference:\n  routes:\n    - {endpoint: 'mock://x', model: m, protocols: [model_discovery], api_key: a, api_key_env: B}\n",
			[]string{"mutually exclusive"}},
		{"ports duplicate", "version: 1\nports: [8080, 8080]\n", []string{"port 8080 listed twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, err := Parse("p.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want errors %q", p, tt.want)
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("error is %T, want *Error", err)
			}
			if p != nil {
				t.Errorf("Parse returned a policy along with errors")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%s\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseReportsEveryError(t *testing.T) {
	doc := `version: 1
filesystem_policy:
  read_only: [relative]
network_policies:
  a:
    endpoints:
      - { host: "*", port: 443 }
      - { host: x.example.com, port: 1, ports: [2] }
    binaries: [{ path: bin }]
`
	_, _, err := Parse("multi.yaml", []byte(doc))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("err = %v, want *Error", err)
	}
	want := []string{
		"multi.yaml:3:15: filesystem_policy.read_only[0]",
		"multi.yaml:7:17: network_policies.a.endpoints[0].host",
		"multi.yaml:8:9: network_policies.a.endpoints[1]",
		"multi.yaml:9:24: network_policies.a.binaries[0].path",
	}
	var got []string
	for _, d := range perr.Diagnostics {
		if !d.Warning {
			got = append(got, d.String())
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestParseWarnings(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"tls terminate", wrap("host: a.example.com\nport: 443\ntls: terminate"), "'tls: terminate' is deprecated"},
		{"tls passthrough", wrap("host: a.example.com\nport: 443\ntls: passthrough"), "'tls: passthrough' is deprecated"},
		{"tls skip with l7", wrap("host: a.example.com\nport: 443\ntls: skip\nprotocol: rest\nenforcement: enforce\naccess: read-only"), "L7 rules cannot be enforced"},
		{"unknown method", wrap("host: a.example.com\nport: 443\nprotocol: rest\nenforcement: enforce\nrules:\n  - allow: {method: FETCH, path: /}"), `unknown HTTP method "FETCH"`},
		{"bad glob bracket", wrap("host: a.example.com\nport: 443\nprotocol: rest\nenforcement: enforce\nrules:\n  - allow: {method: GET, path: '/a[b'}"), "unclosed '['"},
		{"bad glob brace", wrap("host: a.example.com\nport: 443\nprotocol: rest\nenforcement: enforce\nrules:\n  - allow: {method: GET, path: '/a{b'}"), "unclosed '{'"},
		{"implicit audit", wrap("host: a.example.com\nport: 443\nprotocol: rest\naccess: read-only"), "defaults to audit"},
		{"rules without protocol", wrap("host: a.example.com\nport: 443\naccess: read-only"), "have no effect without 'protocol: rest'"},
		{"broad cidr", wrap("port: 5432\nallowed_ips: [10.0.0.0/8]"), "very broad range"},
		{"control plane port", wrap("host: k8s.example.com\nport: 6443"), "always refused"},
		{"unknown compatibility", "version: 1\nlandlock: {compatibility: strict}\n", "treated as best_effort"},
		{"root user", "version: 1\nprocess: {run_as_user: root}\n", "will run as root"},
		{"no binaries", "version: 1\nnetwork_policies:\n  a: {endpoints: [{host: a.example.com, port: 443}]}\n", "policy has no binaries"},
		{"ro and rw", "version: 1\nfilesystem_policy: {read_only: [/data], read_write: [/data]}\n", "listed in both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, warnings, err := Parse("w.yaml", []byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if p == nil {
				t.Fatal("nil policy")
			}
			var all []string
			for _, w := range warnings {
				if !w.Warning {
					t.Errorf("warning list holds an error: %s", w)
				}
				all = append(all, w.String())
			}
			if !strings.Contains(strings.Join(all, "\n"), tt.want) {
				t.Errorf("warnings %q do not contain %q", all, tt.want)
			}
		})
	}
}

func TestParseModel(t *testing.T) {
	doc := `version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /etc/]
  read_write: [/sandbox]
landlock: {compatibility: hard_requirement}
process: {run_as_user: "1000", run_as_group: agents}
network_policies:
  github:
    name: GitHub
    endpoints:
      - host: API.github.com
        ports: [443, 80, 443]
        protocol: rest
        enforcement: enforce
        access: read-write
      - host: raw.github.com
        port: 443
        protocol: rest
        enforcement: audit
        rules:
          - allow:
              method: GET
              path: "/**/info/refs*"
              query: {service: "git-*", tag: {any: [a-*, b-*]}}
      - port: 5432
        allowed_ips: [10.0.5.0/24, 10.1.2.3, "::ffff:10.9.0.0/112"]
    binaries: [{path: /usr/bin/git}, {path: "/usr/lib/git-core/*", harness: x}]
credentials:
  github-token:
    source: file:github
    hosts: [api.github.com]
inference:
  routes:
    - {name: local, endpoint: "http://127.0.0.1:1234/v1", model: m1, protocols: [openai_chat_completions], api_key_env: KEY}
ports: [8080]
`
	p, warnings, err := Parse("m.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("unexpected warnings: %v", warnings)
	}
	if p.Source != "m.yaml" || p.Version != 1 {
		t.Errorf("source/version = %q/%d", p.Source, p.Version)
	}
	if want := (&Filesystem{IncludeWorkdir: true, ReadOnly: []string{"/usr", "/etc"}, ReadWrite: []string{"/sandbox"}}); !reflect.DeepEqual(p.Filesystem, want) {
		t.Errorf("filesystem = %+v, want %+v", p.Filesystem, want)
	}
	if !p.Landlock.Hard() {
		t.Error("landlock not hard_requirement")
	}
	if *p.Process != (Process{RunAsUser: "1000", RunAsGroup: "agents"}) {
		t.Errorf("process = %+v", p.Process)
	}
	gh := p.Network["github"]
	if gh == nil || gh.Key != "github" || gh.Name != "GitHub" || len(gh.Endpoints) != 3 || len(gh.Binaries) != 2 {
		t.Fatalf("github policy = %+v", gh)
	}
	e0 := gh.Endpoints[0]
	if !reflect.DeepEqual(e0.Ports, []uint16{80, 443}) {
		t.Errorf("ports = %v, want deduplicated [80 443]", e0.Ports)
	}
	var methods []string
	for _, r := range e0.Rules {
		methods = append(methods, r.Method)
		if r.Path != "**" {
			t.Errorf("preset rule path = %q", r.Path)
		}
	}
	if got := strings.Join(methods, ","); got != "GET,HEAD,OPTIONS,POST,PUT,PATCH" {
		t.Errorf("read-write preset = %s (DELETE must not be included)", got)
	}
	if !e0.Enforced() || !e0.HasL7() {
		t.Error("endpoint 0 should be enforced L7")
	}
	e1 := gh.Endpoints[1]
	if e1.Enforced() || len(e1.Rules) != 1 {
		t.Errorf("endpoint 1 = %+v", e1)
	}
	q := e1.Rules[0].Query
	if q["service"].Glob != "git-*" || !reflect.DeepEqual(q["tag"].Any, []string{"a-*", "b-*"}) {
		t.Errorf("query = %+v", q)
	}
	wantIPs := []netip.Prefix{netip.MustParsePrefix("10.0.5.0/24"), netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("10.9.0.0/16")}
	if e2 := gh.Endpoints[2]; e2.Host != "" || !reflect.DeepEqual(e2.AllowedIPs, wantIPs) {
		t.Errorf("hostless endpoint = %+v, want allowed_ips %v", e2, wantIPs)
	}
	c := p.Credentials["github-token"]
	if c == nil || c.Env != "GITHUB_TOKEN" || c.Placeholder() != "moat:credential:github-token" || c.Source != "file:github" {
		t.Errorf("credential = %+v", c)
	}
	if rt := p.Inference.Routes[0]; rt.ProviderType != "openai" || rt.Model != "m1" || rt.APIKeyEnv != "KEY" {
		t.Errorf("route = %+v", rt)
	}
	if !reflect.DeepEqual(p.Ports, []uint16{8080}) {
		t.Errorf("ports = %v", p.Ports)
	}
}

func TestParseJSON(t *testing.T) {
	doc := "{\n\t\"version\": 1,\n\t\"network_policies\": {\n\t\t\"a\": {\"endpoints\": [{\"host\": \"x.example.com\", \"port\": 443}],\n\t\t\"binaries\": [{\"path\": \"/usr/bin/curl\"}]}\n\t}\n}\n"
	p, _, err := Parse("p.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if ep := p.Network["a"].Endpoints[0]; ep.Host != "x.example.com" || ep.Ports[0] != 443 {
		t.Errorf("endpoint = %+v", ep)
	}
	_, _, err = Parse("p.json", []byte("{\"version\": 1, \"bogus\": true}"))
	if err == nil || !strings.Contains(err.Error(), `p.json:1:16: unknown key "bogus"`) {
		t.Errorf("err = %v", err)
	}
}

// TestOpenShellCorpus: every policy from OpenShell's repository parses
// (warnings allowed).
func TestOpenShellCorpus(t *testing.T) {
	files, _ := filepath.Glob("../../shared/reference/openshell-policies/*.yaml")
	if len(files) == 0 {
		t.Skip("no OpenShell policy corpus beside the repository (../shared/reference/openshell-policies)")
	}
	for _, f := range files {
		if _, _, err := ParseFile(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseFileMissing(t *testing.T) {
	_, _, err := ParseFile(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

// FuzzParse: any input yields a policy or an *Error, never a panic, and
// every error is positioned inside the document.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../shared/reference/openshell-policies/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(wrap("host: a.example.com\nport: 443\nprotocol: rest\nenforcement: enforce\nrules:\n  - allow: {method: GET, path: '/v1/**', query: {a: {any: [x]}}}")))
	f.Add([]byte(`{"version":1,"credentials":{"a":{"source":"env:A","hosts":["a.example.com"]}}}`))
	f.Add([]byte("version: 1\nx: &a [1]\ny: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, _, err := Parse("f.yaml", data)
		if (p == nil) == (err == nil) {
			t.Fatalf("policy %v and error %v", p, err)
		}
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Diagnostics) == 0 {
				t.Fatalf("error %v is not a non-empty *Error", err)
			}
			// YAML breaks lines at \r too (and libyaml at NEL, LS and
			// PS); counting each break character bounds the line count.
			text := yamlText(data)
			lines := 1 + strings.Count(text, "\n") + strings.Count(text, "\r") +
				strings.Count(text, "\u0085") + strings.Count(text, "\u2028") + strings.Count(text, "\u2029")
			for _, d := range perr.Diagnostics {
				if d.Line > lines {
					t.Fatalf("diagnostic %s points past the last line %d", d, lines)
				}
			}
		}
	})
}

// yamlText is the text the YAML decoder reads from data: UTF-16 when data
// starts with a UTF-16 byte order mark (libyaml's rule), else data as it is.
func yamlText(data []byte) string {
	var order binary.ByteOrder
	switch {
	case bytes.HasPrefix(data, []byte{0xfe, 0xff}):
		order = binary.BigEndian
	case bytes.HasPrefix(data, []byte{0xff, 0xfe}):
		order = binary.LittleEndian
	default:
		return string(data)
	}
	units := make([]uint16, 0, len(data)/2)
	for i := 2; i+1 < len(data); i += 2 {
		units = append(units, order.Uint16(data[i:]))
	}
	return string(utf16.Decode(units))
}
