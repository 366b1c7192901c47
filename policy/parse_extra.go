package policy

import (
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The moat-only top-level keys: credentials and inference routes.

var (
	credentialName = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_-]{0,63}$`)
	envName        = lazyRegexp(`^[A-Za-z_][A-Za-z0-9_]*$`)
	fileName       = lazyRegexp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

func (r *reader) credentials(n *yaml.Node, path string) map[string]*Credential {
	if isNull(resolve(n)) {
		return nil
	}
	fields, _ := r.mapping(n, path)
	out := make(map[string]*Credential, len(fields))
	envs := map[string]string{}
	for _, f := range fields {
		cpath := join(path, f.key)
		if !credentialName().MatchString(f.key) {
			r.errorf(f.keyN, cpath, "invalid credential name %q (letters, digits, '_' and '-', starting with a letter or '_')", f.key)
			continue
		}
		c := &Credential{Name: f.key, Env: strings.ToUpper(strings.ReplaceAll(f.key, "-", "_"))}
		sub, ok := r.mapping(f.value, cpath, "env", "hosts", "source")
		if !ok {
			continue
		}
		for _, sf := range sub {
			spath := join(cpath, sf.key)
			switch sf.key {
			case "env":
				if s, ok := r.str(sf.value, spath); ok {
					if !envName().MatchString(s) {
						r.errorf(sf.value, spath, "invalid environment variable name %q", s)
					}
					c.Env = s
				}
			case "hosts":
				hosts, _ := r.strings(sf.value, spath)
				for i, h := range hosts {
					r.checkHost(resolve(sf.value).Content[i], index(spath, i), h)
				}
				c.Hosts = hosts
			case "source":
				if s, ok := r.str(sf.value, spath); ok {
					r.checkCredentialSource(sf.value, spath, s)
					c.Source = s
				}
			}
		}
		if len(c.Hosts) == 0 {
			r.errorf(f.value, cpath, "credential needs 'hosts' (the destinations it may be sent to)")
		}
		if c.Source == "" {
			r.errorf(f.value, cpath, "credential needs 'source' (env:VAR or file:NAME)")
		}
		if other, dup := envs[c.Env]; dup {
			r.errorf(f.value, cpath, "environment variable %s is already used by credential %q", c.Env, other)
		}
		envs[c.Env] = f.key
		out[f.key] = c
	}
	return out
}

func (r *reader) checkCredentialSource(n *yaml.Node, path, s string) {
	kind, name, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		r.errorf(n, path, "source %q must be env:VAR or file:NAME", s)
	case kind == "env":
		if !envName().MatchString(name) {
			r.errorf(n, path, "invalid environment variable name %q", name)
		}
	case kind == "file":
		if !fileName().MatchString(name) {
			r.errorf(n, path, "invalid file name %q (a name in the credentials directory, not a path)", name)
		}
	default:
		r.errorf(n, path, "unknown source kind %q (expected env or file)", kind)
	}
}

func (r *reader) inference(n *yaml.Node, path string) *Inference {
	inf := &Inference{}
	if isNull(resolve(n)) {
		return inf
	}
	fields, _ := r.mapping(n, path, "routes")
	for _, f := range fields {
		inf.Routes = r.routes(f.value, join(path, f.key))
	}
	return inf
}

// routes reads inference routes (shared by policies and the admin config).
func (r *reader) routes(n *yaml.Node, path string) []*Route {
	items, _ := r.sequence(n, path)
	var out []*Route
	for i, it := range items {
		if rt := r.route(it, index(path, i)); rt != nil {
			out = append(out, rt)
		}
	}
	return out
}

func (r *reader) route(n *yaml.Node, path string) *Route {
	fields, ok := r.mapping(n, path, "name", "endpoint", "model", "provider_type", "protocols",
		"api_key", "api_key_env", "timeout_secs")
	if !ok {
		return nil
	}
	rt := &Route{ProviderType: "openai"}
	before := len(r.diags)
	for _, f := range fields {
		fpath := join(path, f.key)
		switch f.key {
		case "name":
			rt.Name, _ = r.str(f.value, fpath)
		case "endpoint":
			if s, ok := r.str(f.value, fpath); ok {
				u, err := url.Parse(s)
				if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "mock") {
					r.errorf(f.value, fpath, "endpoint %q must be an http://, https:// or mock:// URL", s)
				}
				rt.Endpoint = s
			}
		case "model":
			rt.Model, _ = r.str(f.value, fpath)
		case "provider_type":
			rt.ProviderType = r.enum(f.value, fpath, "openai", "anthropic")
		case "protocols":
			protos, _ := r.strings(f.value, fpath)
			for j, p := range protos {
				if !contains(InferenceProtocols, p) {
					r.errorf(resolve(f.value).Content[j], index(fpath, j), "unknown protocol %q (expected one of: %s)",
						p, strings.Join(InferenceProtocols, ", "))
				}
			}
			rt.Protocols = protos
		case "api_key":
			rt.APIKey, _ = r.str(f.value, fpath)
		case "api_key_env":
			if s, ok := r.str(f.value, fpath); ok {
				if !envName().MatchString(s) {
					r.errorf(f.value, fpath, "invalid environment variable name %q", s)
				}
				rt.APIKeyEnv = s
			}
		case "timeout_secs":
			v, _ := r.integer(f.value, fpath, 0, 3600)
			rt.TimeoutSecs = int(v)
		}
	}
	if rt.Endpoint == "" {
		r.errorf(n, path, "route needs 'endpoint'")
	}
	if rt.Model == "" {
		r.errorf(n, path, "route needs 'model'")
	}
	if len(rt.Protocols) == 0 {
		r.errorf(n, path, "route needs 'protocols'")
	}
	if rt.APIKey != "" && rt.APIKeyEnv != "" {
		r.errorf(n, path, "'api_key' and 'api_key_env' are mutually exclusive")
	}
	if r.failedSince(before) {
		return nil
	}
	return rt
}
