package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMatchHost(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"api.github.com", "api.github.com", true},
		{"api.github.com", "API.GitHub.com", true},
		{"API.github.com", "api.github.com", true},
		{"api.github.com", "github.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "A.EXAMPLE.COM", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "x.y.example.com", false},
		{"**.example.com", "x.y.example.com", true},
		{"**.example.com", "a.example.com", true},
		{"**.example.com", "example.com", false},
		{"**.example.com", "evil-example.com", false},
		{"*.example.com", "a.example.com.evil.net", false},
		{"*.*.example.com", "a.b.example.com", true},
		{"*.*.example.com", "a.example.com", false},
		{"*.example.co?", "a.example.com", true},
		{"*.example.{com,org}", "a.example.org", true},
		{"*.example.{com,org}", "a.example.net", false},
		{"*.ex[a-c]mple.com", "a.exbmple.com", true},
		{"*.ex[!a-c]mple.com", "a.exbmple.com", false},
		{"*.ex[ample.com", "a.ex[ample.com", false}, // malformed matches nothing
	}
	for _, tt := range tests {
		if got := MatchHost(tt.pattern, tt.host); got != tt.want {
			t.Errorf("MatchHost(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/usr/bin/curl", "/usr/bin/curl", true},
		{"/usr/bin/curl", "/usr/bin/curl2", false},
		{"/**", "/usr/local/bin/foo", true},
		{"**", "anything/at/all", true},
		{"/usr/bin/*", "/usr/bin/curl", true},
		{"/usr/bin/*", "/usr/local/bin/foo", false},
		{"/usr/bin/*", "/usr/bin/x/y", false},
		{"/sandbox/.uv/python/**/python3*", "/sandbox/.uv/python/cpython-3.12/bin/python3.12", true},
		{"/sandbox/.uv/python/**/python3*", "/sandbox/.uv/python/cpython-3.12/bin/pip", false},
		{"/**/info/refs*", "/org/repo.git/info/refs", true},
		{"/**/git-upload-pack", "/org/repo.git/git-upload-pack", true},
		{"/v1/**", "/v1/a/b", true},
		{"/v1/**", "/v2/x", false},
		{"/home/*/.local/bin/copilot", "/home/sandbox/.local/bin/copilot", true},
		{"/home/*/.local/bin/copilot", "/home/a/b/.local/bin/copilot", false},
	}
	for _, tt := range tests {
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestMatchValue(t *testing.T) {
	for _, tt := range []struct {
		pattern, value string
		want           bool
	}{
		{"foo-*", "foo-a", true},
		{"foo-*", "foo-a/b.c", true}, // no separator for query values
		{"foo-*", "evil", false},
		{"git-*", "git-upload-pack", true},
	} {
		if got := MatchValue(tt.pattern, tt.value); got != tt.want {
			t.Errorf("MatchValue(%q, %q) = %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

func TestCheckGlob(t *testing.T) {
	for _, bad := range []string{"/a[b", "/a{b", "/a}b", "/a]b", "/a[]"} {
		if CheckGlob(bad, '/') == nil {
			t.Errorf("CheckGlob(%q) = nil, want an error", bad)
		}
	}
	for _, good := range []string{"/a/**", "/a[bc]", "/{a,b}/c", `/a\*`} {
		if err := CheckGlob(good, '/'); err != nil {
			t.Errorf("CheckGlob(%q) = %v", good, err)
		}
	}
}

// FuzzMatchPath checks the glob translation never panics, that a pattern
// without glob syntax matches exactly itself, and that `*` never crosses
// the separator.
func FuzzMatchPath(f *testing.F) {
	for _, s := range []string{"/usr/bin/curl", "/a/*/c", "/**/x", "/a[b", "{a,b}", "/x?y", `\*`} {
		f.Add(s, "/usr/bin/curl")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		got := MatchPath(pattern, path)
		if !IsHostGlob(pattern) && pattern != "**" && got != (pattern == path) {
			t.Fatalf("literal %q vs %q: %v", pattern, path, got)
		}
		if !IsHostGlob(pattern) && !strings.Contains(pattern, `\`) && !MatchPath(pattern, pattern) {
			t.Fatalf("literal %q does not match itself", pattern)
		}
		// "PREFIX*" with a literal prefix matches path iff path has the
		// prefix and no '/' after it.
		if !IsHostGlob(path) && !strings.ContainsAny(path, `\`) && utf8.ValidString(path) {
			want := regexp.MustCompile(`^` + regexp.QuoteMeta(path) + `[^/]*$`)
			probe := path + "x/y"
			if MatchPath(path+"*", probe) != want.MatchString(probe) {
				t.Fatalf("%q* vs %q disagrees with reference", path, probe)
			}
		}
	})
}

// FuzzMatchHost checks one-label and many-label wildcards against a
// reference written with strings.
func FuzzMatchHost(f *testing.F) {
	f.Add("example.com", "a.example.com")
	f.Add("example.com", "a.b.example.com")
	f.Add("Example.COM", "A.example.com")
	f.Fuzz(func(t *testing.T, suffix, host string) {
		if IsHostGlob(suffix) || strings.Contains(suffix, `\`) || !utf8.ValidString(suffix) || !utf8.ValidString(host) {
			return
		}
		ls, lh := strings.ToLower(suffix), strings.ToLower(host)
		if strings.ToLower(ls) != ls || strings.ToUpper(lh) == lh && strings.ToLower(strings.ToUpper(lh)) != lh {
			return // skip case-mapping oddities outside ASCII
		}
		head, ok := strings.CutSuffix(lh, "."+ls)
		one := ok && !strings.Contains(head, ".")
		many := ok
		if got := MatchHost("*."+suffix, host); got != one {
			t.Fatalf("MatchHost(*.%q, %q) = %v, want %v", suffix, host, got, one)
		}
		if got := MatchHost("**."+suffix, host); got != many {
			t.Fatalf("MatchHost(**.%q, %q) = %v, want %v", suffix, host, got, many)
		}
	})
}
