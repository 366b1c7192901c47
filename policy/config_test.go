package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultConfig(t *testing.T) {
	cfg := DefaultConfig()
	want := &Config{
		Sandbox:                 true,
		AllowAnnotationPolicies: true,
		PolicyDir:               "/etc/moat/policies",
		LogDir:                  "/var/log/moat",
		CredentialsDir:          "/etc/moat/credentials",
		StateDir:                "/run/moat",
		AddressPool:             netip.MustParsePrefix("10.200.0.0/16"),
		ProxyPort:               3128,
		LogMaxSizeMB:            10,
		LogMaxFiles:             3,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("DefaultConfig() = %+v, want %+v", cfg, want)
	}
	for _, doc := range []string{"", "\n  \n", "# nothing here\n", "---\n", "null\n", "~"} {
		got, err := ParseConfig("config.yaml", []byte(doc))
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseConfig(%q) = %+v, want defaults", doc, got)
		}
	}
}

func TestParseConfigFields(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		edit func(c *Config)
	}{
		{"sandbox off", "sandbox: off", func(c *Config) { c.Sandbox = false }},
		{"sandbox on", "sandbox: on", func(c *Config) {}},
		{"sandbox false", "sandbox: false", func(c *Config) { c.Sandbox = false }},
		{"sandbox true", "sandbox: true", func(c *Config) {}},
		{"sandbox quoted OFF", `sandbox: "OFF"`, func(c *Config) { c.Sandbox = false }},
		{"sandbox null keeps default", "sandbox:", func(c *Config) {}},
		{"annotations off", "allow_annotation_policies: false", func(c *Config) { c.AllowAnnotationPolicies = false }},
		{"policy_dir", "policy_dir: /srv/moat/policies/", func(c *Config) { c.PolicyDir = "/srv/moat/policies" }},
		{"default_policy", "default_policy: /etc/moat/policies/strict.yaml", func(c *Config) { c.DefaultPolicy = "/etc/moat/policies/strict.yaml" }},
		{"log_dir", "log_dir: /var/log/sandbox", func(c *Config) { c.LogDir = "/var/log/sandbox" }},
		{"credentials_dir", "credentials_dir: /etc/secrets", func(c *Config) { c.CredentialsDir = "/etc/secrets" }},
		{"state_dir", "state_dir: /run/moat2", func(c *Config) { c.StateDir = "/run/moat2" }},
		{"address_pool", "address_pool: 172.30.0.0/20", func(c *Config) { c.AddressPool = netip.MustParsePrefix("172.30.0.0/20") }},
		{"address_pool /24", "address_pool: 192.168.77.0/24", func(c *Config) { c.AddressPool = netip.MustParsePrefix("192.168.77.0/24") }},
		{"proxy_port", "proxy_port: 8080", func(c *Config) { c.ProxyPort = 8080 }},
		{"log sizes", "log_max_size_mb: 50\nlog_max_files: 7", func(c *Config) { c.LogMaxSizeMB, c.LogMaxFiles = 50, 7 }},
		{"empty inference", "inference: {}", func(c *Config) { c.Inference = &Inference{} }},
		{
			"inference routes",
			`inference:
  routes:
    - name: inference.local
      endpoint: http://localhost:1234/v1
      model: local-model
      provider_type: anthropic
      protocols: [anthropic_messages, model_discovery]
      api_key_env: ANTHROPIC_API_KEY
      timeout_secs: 30
    - endpoint: mock://x
      model: m1
      protocols: [openai_chat_completions]
      api_key: lm-studio
`,
			func(c *Config) {
				c.Inference = &Inference{Routes: []*Route{
					{Name: "inference.local", Endpoint: "http://localhost:1234/v1", Model: "local-model", ProviderType: "anthropic",
						Protocols: []string{"anthropic_messages", "model_discovery"}, APIKeyEnv: "ANTHROPIC_API_KEY", TimeoutSecs: 30},
					{Endpoint: "mock://x", Model: "m1", ProviderType: "openai", Protocols: []string{"openai_chat_completions"}, APIKey: "lm-studio"},
				}}
			},
		},
		{
			"JSON",
			`{"sandbox": "off", "proxy_port": 3129, "policy_dir": "/p"}`,
			func(c *Config) { c.Sandbox, c.ProxyPort, c.PolicyDir = false, 3129, "/p" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig("config.yaml", []byte(tt.doc))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			want := DefaultConfig()
			tt.edit(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
				if got.Inference != nil && want.Inference != nil {
					for i := range got.Inference.Routes {
						t.Errorf("route %d: %+v", i, got.Inference.Routes[i])
					}
				}
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error, in order
	}{
		{"unknown key", "sandbox: on\nlog_dir: /var/log/moat\nsanbox: off\n", []string{`config.yaml:3:1: unknown key "sanbox"`}},
		{"unknown nested key", "inference:\n  routs: []\n", []string{`config.yaml:2:3: inference: unknown key "routs"`}},
		{"several problems", "sanbox: off\nproxy_port: 0\nlog_dir: relative\n", []string{
			`config.yaml:1:1: unknown key "sanbox"`,
			`config.yaml:2:13: proxy_port: 0 is out of range (1 to 65535)`,
			`config.yaml:3:10: log_dir: path "relative" is not absolute`,
		}},
		{"duplicate key", "proxy_port: 1\nproxy_port: 2\n", []string{`config.yaml:2:1: proxy_port: duplicate key`}},
		{"sandbox maybe", "sandbox: maybe", []string{`config.yaml:1:10: sandbox: expected on or off, got "maybe"`}},
		{"sandbox number", "sandbox: 1", []string{`sandbox: expected on or off, got a number`}},
		{"sandbox list", "sandbox: [on]", []string{`sandbox: expected on or off, got a list`}},
		{"annotations not bool", "allow_annotation_policies: sometimes", []string{`allow_annotation_policies: expected true or false`}},
		{"empty path", `policy_dir: ""`, []string{`policy_dir: empty path`}},
		{"relative default policy", "default_policy: strict.yaml", []string{`default_policy: path "strict.yaml" is not absolute`}},
		{"path not a string", "state_dir: {a: b}", []string{`state_dir: expected a string, got a mapping`}},
		{"pool garbage", "address_pool: ten", []string{`address_pool: "ten" is not a prefix`}},
		{"pool without length", "address_pool: 10.200.0.0", []string{`is not a prefix`}},
		{"pool IPv6", "address_pool: fd00::/64", []string{`address_pool: fd00::/64 is not an IPv4 prefix`}},
		{"pool too small", "address_pool: 10.200.0.0/25", []string{`address_pool: 10.200.0.0/25 is smaller than a /24`}},
		{"pool host bits", "address_pool: 10.200.1.0/16", []string{`10.200.1.0/16 has host bits set (did you mean 10.200.0.0/16?)`}},
		{"port too big", "proxy_port: 70000", []string{`proxy_port: 70000 is out of range`}},
		{"port string", "proxy_port: http", []string{`proxy_port: expected an integer, got a string`}},
		{"log size zero", "log_max_size_mb: 0", []string{`log_max_size_mb: 0 is out of range`}},
		{"log files negative", "log_max_files: -1", []string{`log_max_files: -1 is out of range`}},
		{"route bad protocol", "inference:\n  routes:\n    - {endpoint: mock://x, model: m, protocols: [grpc]}\n", []string{`inference.routes[0].protocols[0]: unknown protocol "grpc"`}},
		{"route bad scheme", "inference:\n  routes:\n    - {endpoint: ftp://x, model: m, protocols: [model_discovery]}\n", []string{`must be an http://, https:// or mock:// URL`}},
		{"route no model", "inference:\n  routes:\n    - {endpoint: https://x, protocols: [model_discovery]}\n", []string{`route needs 'model'`}},
		{"route empty model", "inference:\n  routes:\n    - {endpoint: https://x, model: '', protocols: [model_discovery]}\n", []string{`route needs 'model'`}},
		{"not a mapping", "- a\n- b\n", []string{`config.yaml:1:1: expected a mapping, got a list`}},
		{"syntax error", "sandbox: on\n  bad: [\n", []string{`config.yaml:`, `syntax error`}},
		{"two documents", "sandbox: on\n---\nsandbox: off\n", []string{`more than one YAML document`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("config.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			var perr *Error
			if !errors.As(err, &perr) {
				t.Errorf("error %T is not *Error", err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error\n%s\nlacks (in order) %q", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(good, []byte("sandbox: off\nproxy_port: 3129\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sandbox || cfg.ProxyPort != 3129 || cfg.Path != good {
		t.Errorf("LoadConfig = %+v", cfg)
	}

	// A missing file given explicitly is an error.
	missing := filepath.Join(dir, "nope.yaml")
	if _, err := LoadConfig(missing); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadConfig(missing) err = %v", err)
	}

	// A missing file at the default location gives the defaults.
	cfg, err = loadConfig(missing, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Errorf("missing optional config = %+v", cfg)
	}
	if _, err := os.Stat(DefaultConfigPath); errors.Is(err, os.ErrNotExist) {
		for _, p := range []string{"", DefaultConfigPath} {
			cfg, err := LoadConfig(p)
			if err != nil || !reflect.DeepEqual(cfg, DefaultConfig()) {
				t.Errorf("LoadConfig(%q) = %+v, %v; want defaults", p, cfg, err)
			}
		}
	}

	// An unreadable path that is not missing is an error even at the default.
	if _, err := loadConfig(dir, true); err == nil {
		t.Error("reading a directory as config succeeded")
	}

	// Errors name the file as given.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("sandbox: on\nsanbox: off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(bad)
	if err == nil || !strings.Contains(err.Error(), bad+`:2:1: unknown key "sanbox"`) {
		t.Errorf("LoadConfig(bad) err = %v", err)
	}
}

func TestLoadConfigTestdata(t *testing.T) {
	cfg, err := LoadConfig("testdata/config-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sandbox || cfg.AllowAnnotationPolicies || cfg.DefaultPolicy != "/etc/moat/policies/default.yaml" ||
		cfg.AddressPool.String() != "10.201.0.0/16" || cfg.Inference == nil || len(cfg.Inference.Routes) != 1 {
		t.Errorf("config-full.yaml = %+v", cfg)
	}
}
