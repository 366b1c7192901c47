package policy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits from OpenShell's safety validator.
const (
	MaxPaths      = 256
	MaxPathLength = 4096
)

// Parse reads a policy document (YAML or JSON) named name (used in
// diagnostics). It returns the validated policy and its warnings, or an
// *Error listing every error found (with warnings alongside).
func Parse(name string, data []byte) (*Policy, []Diagnostic, error) {
	r := &reader{file: name}
	p := r.document(data)
	var warnings, errs []Diagnostic
	for _, d := range r.diags {
		if d.Warning {
			warnings = append(warnings, d)
		} else {
			errs = append(errs, d)
		}
	}
	if len(errs) > 0 {
		return nil, warnings, &Error{Diagnostics: append(errs, warnings...)}
	}
	p.Source = name
	return p, warnings, nil
}

// ParseFile reads and parses a policy file; diagnostics name it by its base
// name joined to its directory as given.
func ParseFile(path string) (*Policy, []Diagnostic, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read policy: %w", err)
	}
	return Parse(path, data)
}

func (r *reader) document(data []byte) *Policy {
	if len(bytes.TrimSpace(data)) == 0 {
		r.errorf(nil, "", "empty policy document")
		return nil
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		r.syntaxError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		r.errorf(&extra, "", "more than one YAML document; a policy is one document")
		return nil
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if isNull(root) || (root.Kind == yaml.DocumentNode && len(root.Content) == 0) {
		r.errorf(nil, "", "empty policy document")
		return nil
	}
	fields, ok := r.mapping(root, "", "version", "filesystem_policy", "landlock", "process",
		"network_policies", "credentials", "inference", "ports")
	if !ok {
		return nil
	}
	p := &Policy{Network: map[string]*NetworkPolicy{}}
	sawVersion := false
	for _, f := range fields {
		switch f.key {
		case "version":
			sawVersion = true
			if v, ok := r.integer(f.value, "version", 0, 1<<31); ok {
				if v != Version {
					r.errorf(f.value, "version", "unsupported version %d (only version 1 exists)", v)
				}
				p.Version = int(v)
			}
		case "filesystem_policy":
			p.Filesystem = r.filesystem(f.value, f.key)
		case "landlock":
			p.Landlock = r.landlock(f.value, f.key)
		case "process":
			p.Process = r.process(f.value, f.key)
		case "network_policies":
			r.networkPolicies(f.value, f.key, p.Network)
		case "credentials":
			p.Credentials = r.credentials(f.value, f.key)
		case "inference":
			p.Inference = r.inference(f.value, f.key)
		case "ports":
			p.Ports = r.ports(f.value, f.key)
		}
	}
	if !sawVersion {
		r.errorf(root, "", "missing required key 'version' (must be 1)")
	}
	return p
}

var yamlLine = lazyRegexp(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a YAML parser error into a positioned diagnostic.
func (r *reader) syntaxError(err error) {
	msg := err.Error()
	if m := yamlLine().FindStringSubmatch(msg); m != nil {
		var line int
		fmt.Sscan(m[1], &line)
		r.diags = append(r.diags, Diagnostic{File: r.file, Line: line, Col: 1, Message: "syntax error: " + m[2]})
		return
	}
	r.errorf(nil, "", "syntax error: %s", strings.TrimPrefix(msg, "yaml: "))
}

func (r *reader) filesystem(n *yaml.Node, path string) *Filesystem {
	fs := &Filesystem{}
	if isNull(resolve(n)) {
		return fs
	}
	fields, ok := r.mapping(n, path, "include_workdir", "read_only", "read_write")
	if !ok {
		return fs
	}
	total := 0
	for _, f := range fields {
		fpath := join(path, f.key)
		switch f.key {
		case "include_workdir":
			fs.IncludeWorkdir, _ = r.boolean(f.value, fpath)
		case "read_only", "read_write":
			items, _ := r.sequence(f.value, fpath)
			var list []string
			for i, it := range items {
				ipath := index(fpath, i)
				s, ok := r.str(it, ipath)
				if !ok || !r.checkFSPath(it, ipath, s) {
					continue
				}
				if f.key == "read_write" && filepath.Clean(s) == "/" {
					r.errorf(it, ipath, "read_write may not be '/' (it would make the whole filesystem writable)")
					continue
				}
				list = append(list, filepath.Clean(s))
			}
			total += len(items)
			if total > MaxPaths {
				r.errorf(f.value, fpath, "too many filesystem paths (%d, at most %d)", total, MaxPaths)
			}
			if f.key == "read_only" {
				fs.ReadOnly = list
			} else {
				fs.ReadWrite = list
			}
		}
	}
	for _, ro := range fs.ReadOnly {
		if contains(fs.ReadWrite, ro) {
			r.warnf(n, path, "%s is listed in both read_only and read_write; it will be writable", ro)
		}
	}
	return fs
}

// checkFSPath applies OpenShell's path rules: absolute, no "..", bounded.
func (r *reader) checkFSPath(n *yaml.Node, path, s string) bool {
	switch {
	case s == "":
		r.errorf(n, path, "empty path")
	case !strings.HasPrefix(s, "/"):
		r.errorf(n, path, "path %q is not absolute", s)
	case hasDotDot(s):
		r.errorf(n, path, "path %q contains '..'", s)
	case len(s) > MaxPathLength:
		r.errorf(n, path, "path is longer than %d characters", MaxPathLength)
	case strings.ContainsRune(s, 0):
		r.errorf(n, path, "path contains a NUL byte")
	default:
		return true
	}
	return false
}

func hasDotDot(s string) bool {
	for _, part := range strings.Split(s, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func (r *reader) landlock(n *yaml.Node, path string) Landlock {
	var l Landlock
	if isNull(resolve(n)) {
		return l
	}
	fields, _ := r.mapping(n, path, "compatibility")
	for _, f := range fields {
		s, ok := r.str(f.value, join(path, f.key))
		if !ok {
			continue
		}
		switch s {
		case BestEffort, HardRequirement:
			l.Compatibility = s
		default:
			// OpenShell treats anything but hard_requirement as best effort.
			r.warnf(f.value, join(path, f.key), "unknown compatibility %q, treated as %s (expected %s or %s)",
				s, BestEffort, BestEffort, HardRequirement)
			l.Compatibility = BestEffort
		}
	}
	return l
}

var userName = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$`)

func (r *reader) process(n *yaml.Node, path string) *Process {
	pr := &Process{}
	if isNull(resolve(n)) {
		return pr
	}
	fields, _ := r.mapping(n, path, "run_as_user", "run_as_group")
	for _, f := range fields {
		fpath := join(path, f.key)
		s, ok := r.str(f.value, fpath)
		if !ok {
			continue
		}
		if !validIdentity(s) {
			r.errorf(f.value, fpath, "%q is neither a user/group name nor a numeric id", s)
			continue
		}
		if s == "root" || s == "0" {
			r.warnf(f.value, fpath, "the agent will run as root")
		}
		if f.key == "run_as_user" {
			pr.RunAsUser = s
		} else {
			pr.RunAsGroup = s
		}
	}
	return pr
}

func validIdentity(s string) bool {
	if s == "" {
		return false
	}
	if strings.Trim(s, "0123456789") == "" {
		var id uint64
		_, err := fmt.Sscan(s, &id)
		return err == nil && id < 1<<32-1
	}
	return userName().MatchString(s)
}

func (r *reader) ports(n *yaml.Node, path string) []uint16 {
	items, _ := r.sequence(n, path)
	var out []uint16
	seen := map[uint16]bool{}
	for i, it := range items {
		p, ok := r.port(it, index(path, i))
		if !ok {
			continue
		}
		if seen[p] {
			r.errorf(it, index(path, i), "port %d listed twice", p)
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
