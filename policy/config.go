package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DefaultConfigPath is where moat reads its admin configuration unless
// `moat --config` names another file.
const DefaultConfigPath = "/etc/moat/config.yaml"

// Config is moat's admin configuration: node-wide settings that no policy
// or annotation can change.
type Config struct {
	// Sandbox is false for `sandbox: off`: moat then behaves exactly as
	// runc (conformance runs, mixed nodes).
	Sandbox bool
	// AllowAnnotationPolicies says whether the dev.moat.policy and
	// dev.moat.policy-name annotations may set a container's policy. When
	// false, a container carrying either fails to create.
	AllowAnnotationPolicies bool
	PolicyDir               string // where dev.moat.policy-name looks
	DefaultPolicy           string // policy file used when nothing else names one; "" = the embedded default
	LogDir                  string
	CredentialsDir          string
	StateDir                string
	AddressPool             netip.Prefix // IPv4 pool the sandboxes' veth pairs come from
	ProxyPort               uint16
	Inference               *Inference // nil when the file has no inference section
	LogMaxSizeMB            int
	LogMaxFiles             int

	// Path is the file the configuration was read from; "" when no file
	// existed and these are the defaults.
	Path string
}

// Defaults of the admin configuration.
const (
	DefaultPolicyDir      = "/etc/moat/policies"
	DefaultLogDir         = "/var/log/moat"
	DefaultCredentialsDir = "/etc/moat/credentials"
	DefaultStateDir       = "/run/moat"
	DefaultAddressPool    = "10.200.0.0/16"
	DefaultProxyPort      = 3128
	DefaultLogMaxSizeMB   = 10
	DefaultLogMaxFiles    = 3
)

// DefaultConfig returns the configuration moat uses without a config file.
func DefaultConfig() *Config {
	return &Config{
		Sandbox:                 true,
		AllowAnnotationPolicies: true,
		PolicyDir:               DefaultPolicyDir,
		LogDir:                  DefaultLogDir,
		CredentialsDir:          DefaultCredentialsDir,
		StateDir:                DefaultStateDir,
		AddressPool:             netip.MustParsePrefix(DefaultAddressPool),
		ProxyPort:               DefaultProxyPort,
		LogMaxSizeMB:            DefaultLogMaxSizeMB,
		LogMaxFiles:             DefaultLogMaxFiles,
	}
}

// configKeys are the keys a config file may hold.
var configKeys = []string{
	"sandbox", "allow_annotation_policies", "policy_dir", "default_policy",
	"log_dir", "credentials_dir", "state_dir", "address_pool", "proxy_port",
	"inference", "log_max_size_mb", "log_max_files",
}

// LoadConfig reads the admin configuration at path. "" means
// DefaultConfigPath. A missing file at the default path gives the defaults
// (most nodes have none); a missing file given explicitly is an error.
func LoadConfig(path string) (*Config, error) {
	if path == "" || path == DefaultConfigPath {
		return loadConfig(DefaultConfigPath, true)
	}
	return loadConfig(path, false)
}

func loadConfig(path string, optional bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if optional && errors.Is(err, fs.ErrNotExist) {
			return DefaultConfig(), nil
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	cfg.Path = path
	return cfg, nil
}

// ParseConfig reads a config document named name (used in error messages).
// Keys left out, or given as null, keep their defaults; an empty document is
// all defaults. The error is an *Error listing every problem with its
// position, e.g. `config.yaml:3:1: unknown key "sanbox" (expected one of: ...)`.
func ParseConfig(name string, data []byte) (*Config, error) {
	cfg := DefaultConfig()
	r := &reader{file: name}
	root, ok := r.configRoot(data)
	if !ok {
		return nil, &Error{Diagnostics: r.diags}
	}
	if root == nil {
		return cfg, nil
	}
	fields, ok := r.mapping(root, "", configKeys...)
	if ok {
		for _, f := range fields {
			if !isNull(f.value) {
				r.configField(cfg, f)
			}
		}
	}
	if r.failed() {
		return nil, &Error{Diagnostics: r.diags}
	}
	return cfg, nil
}

// configRoot decodes the document; a nil node means an empty document.
func (r *reader) configRoot(data []byte) (*yaml.Node, bool) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, true
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true // comments only
		}
		r.syntaxError(err)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		r.errorf(&extra, "", "more than one YAML document; the config is one document")
		return nil, false
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, true
		}
		root = resolve(root.Content[0])
	}
	if isNull(root) {
		return nil, true
	}
	return root, true
}

func (r *reader) configField(cfg *Config, f field) {
	v, key := f.value, f.key
	switch key {
	case "sandbox":
		cfg.Sandbox = r.configSwitch(v, key)
	case "allow_annotation_policies":
		cfg.AllowAnnotationPolicies, _ = r.boolean(v, key)
	case "policy_dir":
		cfg.PolicyDir = r.configPath(v, key)
	case "default_policy":
		cfg.DefaultPolicy = r.configPath(v, key)
	case "log_dir":
		cfg.LogDir = r.configPath(v, key)
	case "credentials_dir":
		cfg.CredentialsDir = r.configPath(v, key)
	case "state_dir":
		cfg.StateDir = r.configPath(v, key)
	case "address_pool":
		if p, ok := r.configPool(v, key); ok {
			cfg.AddressPool = p
		}
	case "proxy_port":
		cfg.ProxyPort, _ = r.port(v, key)
	case "inference":
		cfg.Inference = r.inference(v, key)
	case "log_max_size_mb":
		n, _ := r.integer(v, key, 1, 1<<20)
		cfg.LogMaxSizeMB = int(n)
	case "log_max_files":
		n, _ := r.integer(v, key, 1, 1000)
		cfg.LogMaxFiles = int(n)
	}
}

// configSwitch reads `on` or `off` (YAML 1.2 reads them as strings), or a
// boolean.
func (r *reader) configSwitch(n *yaml.Node, path string) bool {
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "on", "true":
			return true
		case "off", "false":
			return false
		}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		r.errorf(n, path, "expected on or off, got %q", n.Value)
	} else {
		r.errorf(n, path, "expected on or off, got %s", kindName(n))
	}
	return true
}

// configPath reads an absolute path and cleans it.
func (r *reader) configPath(n *yaml.Node, path string) string {
	s, ok := r.str(n, path)
	if !ok {
		return ""
	}
	switch {
	case s == "":
		r.errorf(n, path, "empty path")
	case strings.IndexByte(s, 0) >= 0:
		r.errorf(n, path, "path contains a NUL byte")
	case !filepath.IsAbs(s):
		r.errorf(n, path, "path %q is not absolute", s)
	default:
		return filepath.Clean(s)
	}
	return ""
}

// configPool reads the sandbox address pool: an IPv4 prefix of /24 or
// larger with no host bits set.
func (r *reader) configPool(n *yaml.Node, path string) (netip.Prefix, bool) {
	s, ok := r.str(n, path)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		r.errorf(n, path, "%q is not a prefix such as %s", s, DefaultAddressPool)
	case !p.Addr().Is4():
		r.errorf(n, path, "%s is not an IPv4 prefix", s)
	case p.Bits() > 24:
		r.errorf(n, path, "%s is smaller than a /24", s)
	case p.Masked() != p:
		r.errorf(n, path, "%s has host bits set (did you mean %s?)", s, p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}
