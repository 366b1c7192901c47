package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moatsandbox/moat/policy/plan"
)

// Annotations moat reads from the OCI spec (Kubernetes users pass them
// through with containerd's `pod_annotations = ["dev.moat.*"]`).
const (
	AnnotationPolicy     = "dev.moat.policy"      // the policy document inline, YAML or JSON
	AnnotationPolicyName = "dev.moat.policy-name" // a policy in the admin config's policy_dir
	AnnotationPorts      = "dev.moat.ports"       // inbound ports, comma-separated
	AnnotationInit       = "dev.moat.init"        // exec or reap
)

// Policy sources, in precedence order: the first one set wins.
const (
	SourceAnnotation     = "annotation"      // dev.moat.policy
	SourceAnnotationName = "annotation-name" // dev.moat.policy-name
	SourceFlag           = "flag"            // moat --policy FILE
	SourceConfig         = "config"          // the admin config's default_policy
	SourceEmbedded       = "embedded"        // DefaultPolicy
)

// Resolved is the policy a container gets and where it came from.
type Resolved struct {
	Policy   *Policy
	Warnings []Diagnostic
	// Source is one of the Source* constants.
	Source string
	// Description says where the policy came from, for logs and
	// `moat policy show`, e.g. `annotation dev.moat.policy-name "strict"
	// (/etc/moat/policies/strict.yaml)`.
	Description string
	// Path is the file read; "" for the inline annotation and the
	// embedded default.
	Path string
	// Data is the document as read (the sidecar reloads it); nil for the
	// embedded default.
	Data []byte
	// Shadowed describes the lower-precedence sources that were also set
	// and are not used.
	Shadowed []string
}

// Loader reads and parses policy documents for Resolve. A nil field means
// the real thing: os.ReadFile and Parse.
type Loader struct {
	ReadFile func(path string) ([]byte, error)
	Parse    func(name string, data []byte) (*Policy, []Diagnostic, error)
}

func (l Loader) read(path string) ([]byte, error) {
	if l.ReadFile != nil {
		return l.ReadFile(path)
	}
	return os.ReadFile(path)
}

func (l Loader) parse(name string, data []byte) (*Policy, []Diagnostic, error) {
	if l.Parse != nil {
		return l.Parse(name, data)
	}
	return Parse(name, data)
}

// candidate is one policy source that is set.
type candidate struct {
	source, desc string
	path         string // file to read; "" for inline
	inline       string
	err          error // a source that is set but unusable (a bad name)
}

// Resolve picks a container's policy: the dev.moat.policy annotation, else
// dev.moat.policy-name, else the --policy flag (flagPolicy, "" when not
// given), else the admin config's default_policy, else the embedded
// default. cfg nil means DefaultConfig().
//
// It fails closed: a policy annotation on a node whose config disallows
// them is an error, never ignored; so is a source that is set but cannot
// be read or parsed (moat never falls back to a lower source).
func Resolve(cfg *Config, annotations map[string]string, flagPolicy string, ld Loader) (*Resolved, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if !cfg.AllowAnnotationPolicies {
		for _, key := range []string{AnnotationPolicy, AnnotationPolicyName} {
			if _, ok := annotations[key]; ok {
				return nil, fmt.Errorf("annotation %s is set, but the admin configuration (allow_annotation_policies: false) forbids policies from annotations", key)
			}
		}
	}

	var cands []candidate
	if doc, ok := annotations[AnnotationPolicy]; ok {
		cands = append(cands, candidate{source: SourceAnnotation, desc: "annotation " + AnnotationPolicy, inline: doc})
	}
	if name, ok := annotations[AnnotationPolicyName]; ok {
		c := candidate{source: SourceAnnotationName, desc: fmt.Sprintf("annotation %s %q", AnnotationPolicyName, name)}
		c.path, c.err = PolicyNamePath(cfg.PolicyDir, name)
		if c.path != "" {
			c.desc += " (" + c.path + ")"
		}
		cands = append(cands, c)
	}
	if flagPolicy != "" {
		cands = append(cands, candidate{source: SourceFlag, desc: "--policy " + flagPolicy, path: flagPolicy})
	}
	if cfg.DefaultPolicy != "" {
		cands = append(cands, candidate{source: SourceConfig, desc: "default_policy " + cfg.DefaultPolicy, path: cfg.DefaultPolicy})
	}
	if len(cands) == 0 {
		return &Resolved{Policy: DefaultPolicy(), Source: SourceEmbedded, Description: DefaultPolicyName}, nil
	}

	win := cands[0]
	res := &Resolved{Source: win.source, Description: win.desc, Path: win.path}
	for _, c := range cands[1:] {
		res.Shadowed = append(res.Shadowed, c.desc)
	}
	if win.err != nil {
		return nil, fmt.Errorf("policy from %s: %w", win.desc, win.err)
	}
	name, data := win.desc, []byte(win.inline)
	if win.path != "" {
		var err error
		if data, err = ld.read(win.path); err != nil {
			return nil, fmt.Errorf("policy from %s: %w", win.desc, err)
		}
		name = win.path
	}
	p, warnings, err := ld.parse(name, data)
	if err != nil {
		return nil, fmt.Errorf("policy from %s: %w", win.desc, err)
	}
	res.Policy, res.Warnings, res.Data = p, warnings, data
	return res, nil
}

// policyName is what dev.moat.policy-name accepts.
var policyName = lazyRegexp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidatePolicyName checks a dev.moat.policy-name value: a name, never a
// path, so an annotation can only pick one of the admin's policies.
func ValidatePolicyName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty policy name")
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("policy name %q contains a NUL byte", name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("policy name %q contains '/': give a name from the policy directory, not a path", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("policy name %q contains '..'", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("policy name %q starts with '.'", name)
	case len(name) > 128:
		return fmt.Errorf("policy name is %d characters long; at most 128 are allowed", len(name))
	case strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml"):
		return fmt.Errorf("policy name %q ends in a file extension: give the name without it (%q)", name,
			strings.TrimSuffix(strings.TrimSuffix(name, ".yaml"), ".yml"))
	case !policyName().MatchString(name):
		for i, r := range name {
			if i == 0 && !isAlnum(r) {
				return fmt.Errorf("policy name %q must start with a letter or digit", name)
			}
			if !isAlnum(r) && r != '.' && r != '_' && r != '-' {
				return fmt.Errorf("policy name %q contains %q; allowed are letters, digits, '.', '_' and '-'", name, r)
			}
		}
		return fmt.Errorf("invalid policy name %q", name)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// PolicyNamePath returns the file dev.moat.policy-name NAME refers to:
// <policyDir>/NAME.yaml.
func PolicyNamePath(policyDir, name string) (string, error) {
	if err := ValidatePolicyName(name); err != nil {
		return "", err
	}
	if policyDir == "" {
		return "", fmt.Errorf("no policy_dir configured")
	}
	return filepath.Join(policyDir, name+".yaml"), nil
}

// ParsePorts parses a comma-separated list of ports (dev.moat.ports), e.g.
// "8080, 8443". Blank input is no ports; duplicates are dropped and the
// order kept.
func ParsePorts(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	seen := make(map[uint16]bool)
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("port list %q: item %d is empty", s, i+1)
		}
		n, err := strconv.ParseUint(item, 10, 64)
		if err != nil || item[0] == '+' {
			return nil, fmt.Errorf("port list %q: %q is not a port number", s, item)
		}
		if n < 1 || n > 65535 {
			return nil, fmt.Errorf("port list %q: port %s is out of range (1 to 65535)", s, item)
		}
		if p := uint16(n); !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// AnnotatedPorts returns the inbound ports of the dev.moat.ports
// annotation; none when it is absent.
func AnnotatedPorts(annotations map[string]string) ([]uint16, error) {
	ports, err := ParsePorts(annotations[AnnotationPorts])
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationPorts, err)
	}
	return ports, nil
}

// Init modes of moat-init (dev.moat.init; see package plan).
const (
	InitReap = plan.InitReap // the program runs as a child; orphans are reaped (the default)
	InitExec = plan.InitExec // the program itself is PID 1
)

// ParseInitMode checks a dev.moat.init value; "" is the default, reap.
func ParseInitMode(s string) (string, error) {
	switch s {
	case "":
		return InitReap, nil
	case InitReap, InitExec:
		return s, nil
	}
	return "", fmt.Errorf("unknown init mode %q (expected %s or %s)", s, InitExec, InitReap)
}

// AnnotatedInitMode returns the init mode the dev.moat.init annotation
// asks for; reap when it is absent.
func AnnotatedInitMode(annotations map[string]string) (string, error) {
	mode, err := ParseInitMode(annotations[AnnotationInit])
	if err != nil {
		return "", fmt.Errorf("annotation %s: %w", AnnotationInit, err)
	}
	return mode, nil
}
