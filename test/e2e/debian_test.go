package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The Debian tests run a sandboxed Debian (the cached debootstrap fixture)
// whose curl, wget, bash, dash and python3 are distinct executables, so the
// proxy's decisions by calling binary and by ancestor can be observed
// end to end, with OpenShell's reasons in `moat denials`.

// debianPolicy gives each program its own destinations on the upstream:
//   - curl_only: curl alone may reach :8080 and the HTTPS server on :8443
//     (relayed untouched, so curl sees the upstream's own certificate), and
//     it lists loopback and metadata endpoints the SSRF guard must still
//     refuse;
//   - via_bash: anything bash runs may reach :8080 and :8081, so a program
//     counts when bash is its ancestor and not when dash or python3 is;
//   - python: python3 (/usr/bin/python3 links to python3.11, the kernel's
//     exe) may reach :8082.
//
// Port 9090 is served but in no policy.
func debianPolicy(b *testbed) string {
	return fmt.Sprintf(`version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /bin, /dev/urandom]
  read_write: [/tmp, /dev/null]
network_policies:
  curl_only:
    endpoints:
      - { host: %[1]s, port: 8080, allowed_ips: [%[2]s] }
      - { host: %[1]s, port: 8443, allowed_ips: [%[2]s], tls: skip }
      - { host: 127.0.0.1, port: 8080 }
      - { host: 169.254.169.254, port: 80 }
    binaries:
      - path: /usr/bin/curl
  via_bash:
    endpoints:
      - { host: %[1]s, port: 8080, allowed_ips: [%[2]s] }
      - { host: %[1]s, port: 8081, allowed_ips: [%[2]s] }
    binaries:
      - path: /usr/bin/bash
  python:
    endpoints:
      - { host: %[1]s, port: 8082, allowed_ips: [%[2]s] }
    binaries:
      - path: "/usr/bin/python3*"
`, b.upstream, b.subnet)
}

// pyFetch is a python3 program fetching url through the proxy with urllib,
// printing the body or the HTTP error.
func pyFetch(url string) string {
	return fmt.Sprintf(`import urllib.request, urllib.error
try:
    print(urllib.request.urlopen(%q, timeout=10).read().decode())
except urllib.error.HTTPError as e:
    print(e)`, url)
}

func TestDebianNetworkIdentity(t *testing.T) {
	fixtures.RequireRoot(t)
	b := newTestbed(t)
	b.serve(8080, "hello from upstream")
	b.serve(8081, "bash-only port")
	b.serve(8082, "python port")
	b.serve(9090, "unlisted port")
	cert := b.serveTLS(8443, "hello over tls")
	// The bundle before the env: cleanups run last-in first-out, so the
	// container is deleted before its overlay goes.
	db := debianNetBundle(t, b, "sleep", "300")
	if err := os.WriteFile(filepath.Join(db.Rootfs, "tmp/upstream.pem"), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	e := newSandboxEnv(t, debianPolicy(b))
	linksBefore := netLinks(t)
	id := e.id("deb")
	start := time.Now()
	e.mustMoat("run", "-d", "--bundle", db.Dir, id)
	e.waitStatus(id, "running")
	t.Logf("container running in %v", time.Since(start))

	up := "http://" + b.upstream
	status := func(url string) []string { // curl printing only the status
		return []string{"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url}
	}
	tests := []struct {
		name     string
		argv     []string
		exit     int    // expected exit status
		stdout   string // substring of stdout
		stderr   string // substring of stderr
		maxDelay time.Duration
	}{
		{name: "curl allowed", argv: []string{"curl", "-sS", up + ":8080/"}, stdout: "hello from upstream"},
		{name: "wget denied", argv: []string{"wget", "-O-", up + ":8080/"}, exit: 8, stderr: "403"},
		// dash is no listed ancestor: still denied.
		{name: "wget under sh denied", argv: []string{"sh", "-c", "wget -O- " + up + ":8080/; echo rc=$?"},
			stdout: "rc=8", stderr: "403"},
		// bash is: via_bash lists :8080. ("; true" keeps bash from exec'ing
		// the command in its own process.)
		{name: "wget under bash allowed", argv: []string{"bash", "-c", "wget -q -O- " + up + ":8080/; true"},
			stdout: "hello from upstream"},
		{name: "curl under bash allowed", argv: []string{"bash", "-c", "curl -sS " + up + ":8081/; true"},
			stdout: "bash-only port"},
		{name: "curl under python3 denied", argv: []string{"python3", "-c",
			"import subprocess; subprocess.run([" + pyStrings(status(up+":8081/")) + "])"}, stdout: "403"},
		{name: "curl alone denied bash's port", argv: status(up + ":8081/"), stdout: "403"},
		{name: "python3 urllib listed", argv: []string{"python3", "-c", pyFetch(up + ":8082/")}, stdout: "python port"},
		{name: "python3 urllib not listed", argv: []string{"python3", "-c", pyFetch(up + ":8080/")},
			stdout: "HTTP Error 403"},
		{name: "unlisted host", argv: []string{"curl", "-sS", "https://example.com/"}, exit: 56,
			stderr: "CONNECT tunnel failed, response 403"},
		{name: "wrong port", argv: status(up + ":9090/"), stdout: "403"},
		// --noproxy '' overrides NO_PROXY (which lists 127.0.0.1).
		{name: "loopback refused by SSRF", argv: append([]string{"curl", "--noproxy", ""}, status("http://127.0.0.1:8080/")[1:]...),
			stdout: "403"},
		{name: "metadata refused by SSRF", argv: append([]string{"curl", "--noproxy", ""}, status("http://169.254.169.254/latest/meta-data/")[1:]...),
			stdout: "403"},
		// -v: curl 7.88 says "Couldn't connect to server" unless verbose.
		{name: "direct connection refused fast", argv: []string{"curl", "-sSv", "--noproxy", "*", "--connect-timeout", "5", up + ":8080/"},
			exit: 7, stderr: "Connection refused", maxDelay: 4 * time.Second},
		{name: "https through CONNECT", argv: []string{"curl", "-sS", "--cacert", "/tmp/upstream.pem", "https://" + b.upstream + ":8443/"},
			stdout: "hello over tls"},
		// The tunnel is end to end: the upstream's own certificate, which
		// no default trust store has.
		{name: "https upstream certificate", argv: []string{"curl", "-sS", "https://" + b.upstream + ":8443/"},
			exit: 60, stderr: "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := e.moat(append([]string{"exec", id}, tt.argv...)...)
			took := time.Since(start)
			if code != tt.exit || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("%q: exit %d (want %d)\nstdout: %q (want %q)\nstderr: %q (want %q)",
					tt.argv, code, tt.exit, stdout, tt.stdout, stderr, tt.stderr)
			}
			if tt.maxDelay > 0 && took > tt.maxDelay {
				t.Errorf("took %v, want under %v", took, tt.maxDelay)
			}
		})
	}

	recs := decisions(t, e, id)
	checks := []struct {
		what  string
		match func(decision) bool
	}{
		{"wget denied with OpenShell's reason", func(d decision) bool {
			return d.Action == "deny" && d.Binary == "/usr/bin/wget" && d.Port == 8080 &&
				strings.Contains(d.Reason, "binary '/usr/bin/wget' not allowed in policy 'curl_only'")
		}},
		{"wget denied under dash", func(d decision) bool {
			return d.Action == "deny" && d.Binary == "/usr/bin/wget" && slices.Contains(d.Ancestors, "/usr/bin/dash")
		}},
		{"wget allowed under bash", func(d decision) bool {
			return d.Action == "allow" && d.Binary == "/usr/bin/wget" && slices.Contains(d.Ancestors, "/usr/bin/bash") && d.Policy == "via_bash"
		}},
		{"curl allowed to :8081 under bash", func(d decision) bool {
			return d.Action == "allow" && d.Binary == "/usr/bin/curl" && d.Port == 8081 && slices.Contains(d.Ancestors, "/usr/bin/bash")
		}},
		{"curl denied :8081 under python3", func(d decision) bool {
			return d.Action == "deny" && d.Binary == "/usr/bin/curl" && d.Port == 8081 && anyHasPrefix(d.Ancestors, "/usr/bin/python3.") &&
				strings.Contains(d.Reason, "binary '/usr/bin/curl' not allowed in policy 'via_bash'")
		}},
		{"python3 allowed to :8082", func(d decision) bool {
			return d.Action == "allow" && strings.HasPrefix(d.Binary, "/usr/bin/python3.") && d.Port == 8082 && d.Policy == "python"
		}},
		{"python3 denied :8080", func(d decision) bool {
			return d.Action == "deny" && strings.HasPrefix(d.Binary, "/usr/bin/python3.") && d.Port == 8080 &&
				strings.Contains(d.Reason, "not allowed in policy 'curl_only'")
		}},
		{"unlisted host", func(d decision) bool {
			return d.Action == "deny" && d.Engine == "opa" && d.Host == "example.com" &&
				strings.Contains(d.Reason, "endpoint example.com:443 not in policy")
		}},
		{"wrong port", func(d decision) bool {
			return d.Action == "deny" && d.Port == 9090 && strings.Contains(d.Reason, "not in policy")
		}},
		{"loopback SSRF", func(d decision) bool { return d.Engine == "ssrf" && d.Action == "deny" && d.Host == "127.0.0.1" }},
		{"metadata SSRF", func(d decision) bool { return d.Engine == "ssrf" && d.Action == "deny" && d.Host == "169.254.169.254" }},
		{"bypass of the proxy", func(d decision) bool { return d.Engine == "bypass" && d.Port == 8080 }},
		// OpenShell logs BYPASS_DETECT ... binary=/usr/bin/curl.
		{"bypass naming its binary /usr/bin/curl", func(d decision) bool {
			return d.Engine == "bypass" && d.Port == 8080 && d.Binary == "/usr/bin/curl"
		}},
		{"https tunnel", func(d decision) bool { return d.Action == "allow" && d.Port == 8443 && d.Binary == "/usr/bin/curl" }},
	}
	for _, c := range checks {
		if _, ok := findDecision(recs, c.match); !ok {
			t.Errorf("decision log has no record: %s", c.what)
		}
	}
	if t.Failed() {
		t.Logf("decision log:\n%s", dumpDecisions(recs))
	}
	human := e.mustMoat("denials", id)
	for _, want := range []string{"binary '/usr/bin/wget' not allowed", "DENIED"} {
		if !strings.Contains(human, want) {
			t.Errorf("moat denials lacks %q:\n%s", want, human)
		}
	}

	// Replace curl, after its first use, with another program (wget, which
	// takes the same URL argument), renamed over it from the host through
	// the overlay, as a package upgrade or an attacker would.
	wget, err := os.ReadFile(filepath.Join(db.Rootfs, "usr/bin/wget"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(db.Rootfs, "usr/bin/.curl.new")
	if err := os.WriteFile(tmp, wget, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(db.Rootfs, "usr/bin/curl")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(db.Upper, "usr/bin/curl")); err != nil {
		t.Errorf("the replacement is not in the overlay's upper layer: %v", err)
	}
	if out, _, _ := e.moat("exec", id, "curl", "--version"); !strings.Contains(out, "GNU Wget") {
		t.Fatalf("curl was not replaced: %q", out)
	}
	if _, stderr, code := e.moat("exec", id, "curl", "-O-", up+":8080/"); code != 8 || !strings.Contains(stderr, "403") {
		t.Errorf("replaced curl: exit %d (want 8, a 403), stderr %q", code, stderr)
	}
	recs = decisions(t, e, id)
	if _, ok := findDecision(recs, func(d decision) bool {
		// The identity engine names the file in its reason: the record
		// has no binary, since the caller could not be identified.
		return d.Action == "deny" && d.Engine == "identity" && d.Port == 8080 &&
			strings.Contains(d.Reason, "binary integrity check failed: /usr/bin/curl hash changed")
	}); !ok {
		t.Errorf("no integrity denial for the replaced curl:\n%s", dumpDecisions(recs))
	}

	e.mustMoat("delete", "--force", id)
	if n := netLinks(t); n != linksBefore {
		t.Errorf("moat links: %d before, %d after delete", linksBefore, n)
	}
}

// pyStrings writes list as comma-separated Python string literals (Go's
// quoting is valid Python for these ASCII strings).
func pyStrings(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// anyHasPrefix reports whether some element of list starts with prefix.
func anyHasPrefix(list []string, prefix string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, prefix) {
			return true
		}
	}
	return false
}
