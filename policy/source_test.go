package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeFiles is a Loader.ReadFile over a map.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		data, ok := files[path]
		if !ok {
			return nil, fmt.Errorf("open %s: %w", path, fs.ErrNotExist)
		}
		return []byte(data), nil
	}
}

func policyDoc(rw string) string {
	return "version: 1\nfilesystem_policy:\n  read_write: [" + rw + "]\n"
}

func TestResolvePrecedence(t *testing.T) {
	files := map[string]string{
		"/etc/moat/policies/named.yaml": policyDoc("/named"),
		"/srv/flag.yaml":                policyDoc("/flag"),
		"/etc/moat/default.yaml":        policyDoc("/config"),
	}
	inline := policyDoc("/inline")
	withDefault := DefaultConfig()
	withDefault.DefaultPolicy = "/etc/moat/default.yaml"

	tests := []struct {
		name        string
		cfg         *Config
		annotations map[string]string
		flag        string
		source      string
		rw          string // the policy's read_write path; "" for the embedded default
		desc        string
		path        string
		shadowed    []string
	}{
		{
			name:        "annotation inline wins over everything",
			cfg:         withDefault,
			annotations: map[string]string{AnnotationPolicy: inline, AnnotationPolicyName: "named"},
			flag:        "/srv/flag.yaml",
			source:      SourceAnnotation, rw: "/inline", desc: "annotation dev.moat.policy",
			shadowed: []string{
				`annotation dev.moat.policy-name "named" (/etc/moat/policies/named.yaml)`,
				"--policy /srv/flag.yaml", "default_policy /etc/moat/default.yaml",
			},
		},
		{
			name:        "inline JSON",
			annotations: map[string]string{AnnotationPolicy: `{"version": 1, "filesystem_policy": {"read_write": ["/inline"]}}`},
			source:      SourceAnnotation, rw: "/inline", desc: "annotation dev.moat.policy",
		},
		{
			name:        "annotation name wins over flag and config",
			cfg:         withDefault,
			annotations: map[string]string{AnnotationPolicyName: "named", "other": "x"},
			flag:        "/srv/flag.yaml",
			source:      SourceAnnotationName, rw: "/named",
			desc:     `annotation dev.moat.policy-name "named" (/etc/moat/policies/named.yaml)`,
			path:     "/etc/moat/policies/named.yaml",
			shadowed: []string{"--policy /srv/flag.yaml", "default_policy /etc/moat/default.yaml"},
		},
		{
			name:   "flag wins over config",
			cfg:    withDefault,
			flag:   "/srv/flag.yaml",
			source: SourceFlag, rw: "/flag", desc: "--policy /srv/flag.yaml", path: "/srv/flag.yaml",
			shadowed: []string{"default_policy /etc/moat/default.yaml"},
		},
		{
			name:   "config default_policy",
			cfg:    withDefault,
			source: SourceConfig, rw: "/config", desc: "default_policy /etc/moat/default.yaml", path: "/etc/moat/default.yaml",
		},
		{
			name:   "embedded default",
			source: SourceEmbedded, desc: DefaultPolicyName,
		},
		{
			name:        "unrelated annotations do not count",
			annotations: map[string]string{AnnotationPorts: "8080", AnnotationInit: "exec"},
			source:      SourceEmbedded, desc: DefaultPolicyName,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Resolve(tt.cfg, tt.annotations, tt.flag, Loader{ReadFile: fakeFiles(files)})
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if res.Source != tt.source || res.Description != tt.desc || res.Path != tt.path {
				t.Errorf("source %q desc %q path %q; want %q %q %q", res.Source, res.Description, res.Path, tt.source, tt.desc, tt.path)
			}
			if !slices.Equal(res.Shadowed, tt.shadowed) {
				t.Errorf("shadowed = %q, want %q", res.Shadowed, tt.shadowed)
			}
			if tt.rw == "" {
				if !slices.Equal(res.Policy.Filesystem.ReadWrite, DefaultPolicy().Filesystem.ReadWrite) {
					t.Errorf("policy = %+v, want the embedded default", res.Policy.Filesystem)
				}
				return
			}
			if got := res.Policy.Filesystem.ReadWrite; !slices.Equal(got, []string{tt.rw}) {
				t.Errorf("read_write = %q, want [%s]", got, tt.rw)
			}
			wantSource := tt.path
			if wantSource == "" {
				wantSource = tt.desc
			}
			if res.Policy.Source != wantSource {
				t.Errorf("Policy.Source = %q, want %q", res.Policy.Source, wantSource)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	files := map[string]string{
		"/etc/moat/policies/bad.yaml": "version: 2\n",
		"/srv/flag.yaml":              policyDoc("/flag"),
	}
	noAnnotations := DefaultConfig()
	noAnnotations.AllowAnnotationPolicies = false
	missingDefault := DefaultConfig()
	missingDefault.DefaultPolicy = "/etc/moat/missing.yaml"

	tests := []struct {
		name        string
		cfg         *Config
		annotations map[string]string
		flag        string
		want        []string
		notExist    bool
	}{
		{
			name:        "inline policy with annotations disallowed",
			cfg:         noAnnotations,
			annotations: map[string]string{AnnotationPolicy: policyDoc("/x")},
			flag:        "/srv/flag.yaml",
			want:        []string{"annotation dev.moat.policy is set, but the admin configuration (allow_annotation_policies: false) forbids"},
		},
		{
			name:        "policy name with annotations disallowed",
			cfg:         noAnnotations,
			annotations: map[string]string{AnnotationPolicyName: "bad"},
			want:        []string{"annotation dev.moat.policy-name is set, but"},
		},
		{
			name:        "empty annotation with annotations disallowed",
			cfg:         noAnnotations,
			annotations: map[string]string{AnnotationPolicy: ""},
			want:        []string{"annotation dev.moat.policy is set"},
		},
		{
			name:        "invalid inline document",
			annotations: map[string]string{AnnotationPolicy: "version: 1\nfilesystem_policy:\n  read_write: [/]\nlandlok: {}\n"},
			want: []string{
				"policy from annotation dev.moat.policy: ",
				`annotation dev.moat.policy:4:1: unknown key "landlok"`,
				"annotation dev.moat.policy:3:16: filesystem_policy.read_write[0]: read_write may not be '/'",
			},
		},
		{
			name:        "empty inline document",
			annotations: map[string]string{AnnotationPolicy: "  "},
			want:        []string{"policy from annotation dev.moat.policy: annotation dev.moat.policy: empty policy document"},
		},
		{
			name:        "invalid named document",
			annotations: map[string]string{AnnotationPolicyName: "bad"},
			want:        []string{`policy from annotation dev.moat.policy-name "bad" (/etc/moat/policies/bad.yaml): /etc/moat/policies/bad.yaml:1:10: `, "unsupported version 2"},
		},
		{
			name:        "missing named policy",
			annotations: map[string]string{AnnotationPolicyName: "nope"},
			flag:        "/srv/flag.yaml",
			want:        []string{`policy from annotation dev.moat.policy-name "nope" (/etc/moat/policies/nope.yaml): open /etc/moat/policies/nope.yaml`},
			notExist:    true,
		},
		{
			name: "missing flag file",
			flag: "/srv/none.yaml",
			want: []string{"policy from --policy /srv/none.yaml: open /srv/none.yaml"}, notExist: true,
		},
		{
			name: "missing config default never falls back to the embedded one",
			cfg:  missingDefault,
			want: []string{"policy from default_policy /etc/moat/missing.yaml: open /etc/moat/missing.yaml"}, notExist: true,
		},
		{name: "name with a path", annotations: map[string]string{AnnotationPolicyName: "a/b"}, want: []string{`policy from annotation dev.moat.policy-name "a/b": policy name "a/b" contains '/'`}},
		{name: "name escaping", annotations: map[string]string{AnnotationPolicyName: "../x"}, flag: "/srv/flag.yaml", want: []string{`policy name "../x" contains '/'`}},
		{name: "dotdot name", annotations: map[string]string{AnnotationPolicyName: "a..b"}, want: []string{`policy name "a..b" contains '..'`}},
		{name: "hidden name", annotations: map[string]string{AnnotationPolicyName: ".hidden"}, want: []string{`policy name ".hidden" starts with '.'`}},
		{name: "empty name", annotations: map[string]string{AnnotationPolicyName: ""}, flag: "/srv/flag.yaml", want: []string{`annotation dev.moat.policy-name "": empty policy name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Resolve(tt.cfg, tt.annotations, tt.flag, Loader{ReadFile: fakeFiles(files)})
			if err == nil {
				t.Fatalf("no error; resolved %+v", res)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\nlacks %q", msg, w)
				}
			}
			if tt.notExist && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v does not wrap fs.ErrNotExist", err)
			}
		})
	}
}

func TestResolveParseErrorIsPolicyError(t *testing.T) {
	_, err := Resolve(nil, map[string]string{AnnotationPolicy: "version: 7"}, "", Loader{})
	var perr *Error
	if !errors.As(err, &perr) || len(perr.Diagnostics) != 1 || perr.Diagnostics[0].Line != 1 {
		t.Errorf("err = %v, want a wrapped *Error with one positioned diagnostic", err)
	}
}

func TestResolveInjectedParse(t *testing.T) {
	var gotName, gotData string
	want := &Policy{Version: 1}
	ld := Loader{Parse: func(name string, data []byte) (*Policy, []Diagnostic, error) {
		gotName, gotData = name, string(data)
		return want, []Diagnostic{{File: name, Message: "deprecated", Warning: true}}, nil
	}}
	res, err := Resolve(nil, map[string]string{AnnotationPolicy: "anything"}, "", ld)
	if err != nil {
		t.Fatal(err)
	}
	if res.Policy != want || gotName != "annotation dev.moat.policy" || gotData != "anything" || len(res.Warnings) != 1 {
		t.Errorf("res %+v, parse(%q, %q)", res, gotName, gotData)
	}
}

func TestResolveRealFiles(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PolicyDir = dir
	res, err := Resolve(cfg, map[string]string{AnnotationPolicyName: "source-strict"}, "", Loader{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != filepath.Join(dir, "source-strict.yaml") || !res.Policy.Landlock.Hard() {
		t.Errorf("resolved %+v policy %+v", res, res.Policy)
	}

	_, err = Resolve(cfg, nil, filepath.Join(dir, "source-invalid.yaml"), Loader{})
	if err == nil || !strings.Contains(err.Error(), `source-invalid.yaml:4:1: unknown key "landlok"`) ||
		!strings.Contains(err.Error(), "source-invalid.yaml:3:16: filesystem_policy.read_write[0]") {
		t.Errorf("err = %v", err)
	}

	_, err = Resolve(cfg, map[string]string{AnnotationPolicyName: "source-missing"}, "", Loader{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not exist", err)
	}
}

func TestValidatePolicyName(t *testing.T) {
	good := []string{"strict", "a", "0", "agent-dev", "team_a.v2", "A.b-c_d", strings.Repeat("x", 128)}
	for _, name := range good {
		if err := ValidatePolicyName(name); err != nil {
			t.Errorf("ValidatePolicyName(%q): %v", name, err)
		}
	}
	bad := []struct{ name, want string }{
		{"", "empty policy name"},
		{"a\x00b", "contains a NUL byte"},
		{"a/b", `contains '/'`},
		{"/etc/passwd", `contains '/'`},
		{"../x", `contains '/'`},
		{"..", `contains '..'`},
		{"a..b", `contains '..'`},
		{".hidden", `starts with '.'`},
		{".", `starts with '.'`},
		{strings.Repeat("x", 129), "129 characters long; at most 128"},
		{"strict.yaml", `ends in a file extension: give the name without it ("strict")`},
		{"strict.yml", `("strict")`},
		{"-x", "must start with a letter or digit"},
		{"_x", "must start with a letter or digit"},
		{"a b", `contains ' '`},
		{"a\\b", `contains '\\'`},
		{"ünïcode", "must start with a letter or digit"},
		{"a:b", `contains ':'`},
	}
	for _, tt := range bad {
		err := ValidatePolicyName(tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ValidatePolicyName(%q) = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestPolicyNamePath(t *testing.T) {
	p, err := PolicyNamePath("/etc/moat/policies", "strict")
	if err != nil || p != "/etc/moat/policies/strict.yaml" {
		t.Errorf("PolicyNamePath = %q, %v", p, err)
	}
	if _, err := PolicyNamePath("", "strict"); err == nil {
		t.Error("no error without a policy_dir")
	}
}

func TestParsePorts(t *testing.T) {
	good := []struct {
		in   string
		want []uint16
	}{
		{"", nil},
		{"  ", nil},
		{"80", []uint16{80}},
		{"8080,8443", []uint16{8080, 8443}},
		{" 1 , 65535 ", []uint16{1, 65535}},
		{"22,80,22", []uint16{22, 80}},
		{"0080", []uint16{80}},
	}
	for _, tt := range good {
		got, err := ParsePorts(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	bad := []struct{ in, want string }{
		{"0", `port 0 is out of range (1 to 65535)`},
		{"65536", `port 65536 is out of range`},
		{"99999999999999999999", `"99999999999999999999" is not a port number`},
		{"80,,443", `port list "80,,443": item 2 is empty`},
		{"80,", `item 2 is empty`},
		{",80", `item 1 is empty`},
		{"http", `"http" is not a port number`},
		{"-1", `"-1" is not a port number`},
		{"+80", `"+80" is not a port number`},
		{"80 443", `"80 443" is not a port number`},
		{"0x50", `"0x50" is not a port number`},
		{"80;443", `"80;443" is not a port number`},
	}
	for _, tt := range bad {
		_, err := ParsePorts(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePorts(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	ports, err := AnnotatedPorts(map[string]string{AnnotationPorts: "8080"})
	if err != nil || !slices.Equal(ports, []uint16{8080}) {
		t.Errorf("AnnotatedPorts = %v, %v", ports, err)
	}
	if ports, err := AnnotatedPorts(nil); err != nil || ports != nil {
		t.Errorf("AnnotatedPorts(nil) = %v, %v", ports, err)
	}
	_, err = AnnotatedPorts(map[string]string{AnnotationPorts: "x"})
	if err == nil || !strings.HasPrefix(err.Error(), `annotation dev.moat.ports: port list "x"`) {
		t.Errorf("AnnotatedPorts error = %v", err)
	}
}

func TestParseInitMode(t *testing.T) {
	for in, want := range map[string]string{"": InitReap, "reap": InitReap, "exec": InitExec} {
		got, err := ParseInitMode(in)
		if err != nil || got != want {
			t.Errorf("ParseInitMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"EXEC", "tini", " exec", "none"} {
		if _, err := ParseInitMode(in); err == nil || !strings.Contains(err.Error(), `(expected exec or reap)`) {
			t.Errorf("ParseInitMode(%q) = %v", in, err)
		}
	}
	if mode, err := AnnotatedInitMode(nil); err != nil || mode != InitReap {
		t.Errorf("AnnotatedInitMode(nil) = %q, %v", mode, err)
	}
	if mode, err := AnnotatedInitMode(map[string]string{AnnotationInit: "exec"}); err != nil || mode != InitExec {
		t.Errorf("AnnotatedInitMode(exec) = %q, %v", mode, err)
	}
	_, err := AnnotatedInitMode(map[string]string{AnnotationInit: "x"})
	if err == nil || !strings.HasPrefix(err.Error(), `annotation dev.moat.init: unknown init mode "x"`) {
		t.Errorf("AnnotatedInitMode(x) = %v", err)
	}
}
