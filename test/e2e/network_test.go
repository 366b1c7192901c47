package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The network tests run sandboxed busybox containers in an outer netns the
// test made (as CNI would), reaching upstream servers on a private /24
// through the sandbox's proxy. busybox's applets are all /bin/busybox, so
// these tests decide by destination; binary identity is the sidecar's own
// tests' business.

// networkPolicy allows busybox to reach the upstream server on 8080, and
// lists loopback and metadata endpoints the SSRF guard must still refuse.
func networkPolicy(b *testbed) string {
	return fmt.Sprintf(`version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /bin]
  read_write: [/tmp]
network_policies:
  upstream:
    endpoints:
      - host: %s
        port: 8080
        allowed_ips: [%s]
      - host: 127.0.0.1
        port: 8080
      - host: 169.254.169.254
        port: 80
    binaries:
      - path: /bin/busybox
      - path: /usr/bin/probe
`, b.upstream, b.subnet)
}

// ifaces prints the sandbox's network interfaces, sorted, on one line.
const ifaces = `awk -F: 'NR>2{print $1}' /proc/net/dev | tr -d ' ' | sort | tr '\n' ' '; echo`

// netBundle is sandboxBundle in the testbed's outer netns.
func netBundle(t *testing.T, b *testbed, args ...string) string {
	t.Helper()
	dir := sandboxBundle(t, args...)
	spec, err := fixtures.ReadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range spec.Linux.Namespaces {
		if spec.Linux.Namespaces[i].Type == "network" {
			spec.Linux.Namespaces[i].Path = b.outer
		}
	}
	// Ping sockets for everyone, as Docker sets it (moat applies it to
	// the agent's netns too).
	if spec.Linux.Sysctl == nil {
		spec.Linux.Sysctl = map[string]string{}
	}
	spec.Linux.Sysctl["net.ipv4.ping_group_range"] = "0 2147483647"
	if err := fixtures.WriteSpec(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNetworkSandbox(t *testing.T) {
	b := newTestbed(t)
	b.serve(8080, "hello from upstream")
	b.serve(9090, "the other port")
	e := newSandboxEnv(t, networkPolicy(b))
	linksBefore := netLinks(t)
	id := e.id("net")
	e.mustMoat("run", "-d", "--bundle", netBundle(t, b, "sleep", "60"), id)
	e.waitStatus(id, "running")
	up := b.upstream

	tests := []struct {
		name, script, want string
	}{
		{"proxy env", "echo $HTTP_PROXY $NO_PROXY", "http://10.200.0.1:3128 127.0.0.1,localhost,::1"},
		{"forward proxy allows", "wget -q -O - http://" + up + ":8080/hello", "hello from upstream"},
		{"CONNECT allows", "probe connect 10.200.0.1:3128 " + up + ":8080 /x", "HTTP/1.1 200 Connection Established\nhello from upstream"},
		{"wrong port denied", "wget -q -O - http://" + up + ":9090/ 2>&1; echo rc=$?", "403"},
		{"CONNECT denied with JSON", "probe connect 10.200.0.1:3128 " + up + ":9090 /", `"error":"policy_denied"`},
		{"unlisted host denied", "probe connect 10.200.0.1:3128 example.com:443 /", "endpoint example.com:443 not in policy"},
		{"loopback refused by SSRF", "probe connect 10.200.0.1:3128 127.0.0.1:8080 /", `"error":"ssrf_denied"`},
		{"metadata refused by SSRF", "probe connect 10.200.0.1:3128 169.254.169.254:80 /", `"error":"ssrf_denied"`},
		{"direct TCP refused", "probe dial tcp " + up + ":8080", "ECONNREFUSED"},
		{"direct UDP/53 refused", "probe dial udp " + up + ":53", "ECONNREFUSED"},
		{"direct ping refused", "probe ping " + up, "EHOSTUNREACH"},
		{"only lo and eth0", ifaces, "eth0 lo \n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			stdout, stderr, code := e.moat("exec", id, "sh", "-c", tt.script)
			if code != 0 {
				t.Fatalf("exec: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.want) {
				t.Errorf("stdout %q lacks %q (stderr: %s)", stdout, tt.want, stderr)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("took %v: refusals must be immediate", d)
			}
		})
	}

	// The decision log has every refusal with OpenShell's reasons.
	stdout, stderr, code := e.moat("denials", "--json", id)
	if code != 0 {
		t.Fatalf("denials: exit %d: %s", code, stderr)
	}
	var engines []string
	bypassed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var r struct{ Action, Engine, Protocol, Host, Reason, Binary string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("denials line %q: %v", line, err)
		}
		engines = append(engines, r.Engine+":"+r.Action)
		if r.Engine == "opa" && r.Binary != "/bin/busybox" && r.Binary != "/usr/bin/probe" {
			t.Errorf("record without the calling binary: %s", line)
		}
		// Direct TCP, UDP and pings are named by the sidecar's queue.
		if r.Engine == "bypass" && (r.Protocol == "tcp" || r.Protocol == "udp" || r.Protocol == "icmp") {
			bypassed[r.Protocol] = true
			if r.Binary != "/usr/bin/probe" {
				t.Errorf("bypass record without the calling binary: %s", line)
			}
		}
	}
	if !bypassed["tcp"] || !bypassed["udp"] || !bypassed["icmp"] {
		t.Errorf("denials lack the direct TCP, UDP or ICMP attempt: %s", stdout)
	}
	joined := strings.Join(engines, " ")
	for _, want := range []string{"opa:deny", "ssrf:deny", "bypass:reject"} {
		if !strings.Contains(joined, want) {
			t.Errorf("denials lack %s: %s", want, stdout)
		}
	}
	human, _, _ := e.moat("denials", id)
	if !strings.Contains(human, "DENIED") || !strings.Contains(human, "[reason:endpoint "+up+":9090 not in policy") {
		t.Errorf("denials output:\n%s", human)
	}

	// A policy applied to the running sandbox takes effect at once; an
	// invalid one is refused and the old one stays.
	newPol := strings.Replace(networkPolicy(b), "port: 8080\n        allowed_ips", "ports: [8080, 9090]\n        allowed_ips", 1)
	polFile := filepath.Join(t.TempDir(), "new.yaml")
	os.WriteFile(polFile, []byte(newPol), 0o644)
	if out, stderr, code := e.moat("policy", "apply", id, polFile); code != 0 {
		t.Fatalf("policy apply: exit %d: %s %s", code, out, stderr)
	}
	if out, _, _ := e.moat("exec", id, "wget", "-q", "-O", "-", "http://"+up+":9090/"); out != "the other port" {
		t.Errorf("after apply, port 9090: %q", out)
	}
	os.WriteFile(polFile, []byte("version: 1\nnetwork_policies:\n  x:\n    endpoints: [{host: '*', port: 1}]\n"), 0o644)
	if _, stderr, code := e.moat("policy", "apply", id, polFile); code == 0 || !strings.Contains(stderr, "unchanged") {
		t.Errorf("invalid apply: exit %d: %s", code, stderr)
	}
	if out, _, _ := e.moat("policy", "show", id); !strings.Contains(out, "9090") {
		t.Errorf("policy show after a refused apply: %s", out)
	}

	e.mustMoat("delete", "--force", id)
	if n := netLinks(t); n != linksBefore {
		t.Errorf("moat links: %d before, %d after delete", linksBefore, n)
	}
}

// TestNetworkNoEgress: a policy without a network section gets an inner
// netns with loopback only: no veth, no sidecar, no route: every
// connection and datagram fails at once as unreachable.
func TestNetworkNoEgress(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	linksBefore := netLinks(t)
	stdout, stderr, code := runSandboxed(t, e, ifaces+"; echo proxy=$HTTP_PROXY; probe dial tcp 192.0.2.1:80; probe dial udp 192.0.2.1:53; probe dial tcp [2001:db8::1]:80")
	if code != 0 || stdout != "lo \nproxy=\nENETUNREACH\nENETUNREACH\nENETUNREACH\n" {
		t.Errorf("exit %d\nstdout %q\nstderr %s", code, stdout, stderr)
	}
	if n := netLinks(t); n != linksBefore {
		t.Errorf("moat links: %d before, %d after", linksBefore, n)
	}
}

// TestNetworkNoEgressNetNS: a sandbox without egress whose spec asks for a
// fresh netns has one netns, the inner one, from its creation on (the init
// is in it before moat-init runs); with a hook, which may configure the
// container's netns as Docker's and nerdctl's do, that netns is a fresh one
// of the hook's and only the agent's processes are in the inner netns.
func TestNetworkNoEgressNetNS(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	networks := filepath.Join(filepath.Dir(e.config), "moat-state", "networks")
	for _, hook := range []bool{false, true} {
		t.Run(fmt.Sprintf("hook=%v", hook), func(t *testing.T) {
			bundle := sandboxBundle(t, "sleep", "60")
			if hook {
				spec, err := fixtures.ReadSpec(bundle)
				if err != nil {
					t.Fatal(err)
				}
				spec.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/bin/true"}}}
				if err := fixtures.WriteSpec(bundle, spec); err != nil {
					t.Fatal(err)
				}
			}
			id := e.id("netns")
			e.mustMoat("create", "--bundle", bundle, id)
			defer e.moat("delete", "--force", id)
			pins, _ := filepath.Glob(filepath.Join(networks, "*", "netns"))
			if len(pins) != 1 {
				t.Fatalf("inner netns pins: %v", pins)
			}
			inner := netnsLink(t, pins[0])
			// Before start, the container's process is libcontainer's
			// init, in the netns libcontainer gave it.
			created := netnsLink(t, fmt.Sprintf("/proc/%d/ns/net", e.state(id).Pid))
			if (created == inner) == hook {
				t.Errorf("hook=%v: the created container's netns is %s, the inner netns %s", hook, created, inner)
			}
			e.mustMoat("start", id)
			out, stderr, code := e.moat("exec", id, "sh", "-c", "readlink /proc/self/ns/net; "+ifaces+"; probe dial tcp 192.0.2.1:80")
			if want := inner + "\nlo \nENETUNREACH\n"; code != 0 || out != want {
				t.Errorf("exec: exit %d, %q, want %q; stderr %s", code, out, want, stderr)
			}
		})
	}
}

// netnsLink is the target of a netns link or pin ("net:[INODE]").
func netnsLink(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// TestNetworkIdentity: the proxy decides by the binary that opened the
// connection, from the kernel's view of the socket's owner: another path
// is denied, an allowed ancestor grants its child, and a binary replaced
// after first use is refused.
func TestNetworkIdentity(t *testing.T) {
	b := newTestbed(t)
	b.serve(8080, "hello from upstream")
	pol := fmt.Sprintf(`version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib, /etc, /proc, /bin, /opt/allowed]
  read_write: [/tmp]
network_policies:
  upstream:
    endpoints:
      - host: %s
        port: 8080
        allowed_ips: [%s]
    binaries:
      - path: /usr/bin/probe
      - path: /opt/allowed/sh
`, b.upstream, b.subnet)
	e := newSandboxEnv(t, pol)
	bundle := netBundle(t, b, "sleep", "60")
	rootfs := filepath.Join(bundle, "rootfs")
	probe, err := os.ReadFile(filepath.Join(rootfs, "usr/bin/probe"))
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile(filepath.Join(rootfs, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(rootfs, "opt/allowed"), 0o755)
	for p, data := range map[string][]byte{"usr/bin/probe2": probe, "opt/allowed/sh": busybox} {
		if err := os.WriteFile(filepath.Join(rootfs, p), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	id := e.id("ident")
	e.mustMoat("run", "-d", "--bundle", bundle, id)
	e.waitStatus(id, "running")
	connect := "connect 10.200.0.1:3128 " + b.upstream + ":8080 /"
	exec := func(script string) string {
		t.Helper()
		out, stderr, code := e.moat("exec", id, "sh", "-c", script)
		if code != 0 {
			t.Fatalf("exec %q: exit %d: %s", script, code, stderr)
		}
		return out
	}
	if out := exec("probe " + connect); !strings.Contains(out, " 200 ") {
		t.Errorf("allowed binary: %q", out)
	}
	if out := exec("probe2 " + connect); !strings.Contains(out, "binary '/usr/bin/probe2' not allowed in policy 'upstream'") {
		t.Errorf("other binary: %q", out)
	}
	if out := exec("/opt/allowed/sh -c 'probe2 " + connect + "; true'"); !strings.Contains(out, " 200 ") {
		t.Errorf("allowed ancestor: %q", out)
	}
	if out := exec("sh -c 'probe2 " + connect + "; true'"); !strings.Contains(out, " 403 ") {
		t.Errorf("same child under another shell: %q", out)
	}
	// Replace the allowed binary after its first use (a new file renamed
	// over it, as a package upgrade or an attacker would).
	tmp := filepath.Join(rootfs, "usr/bin/.probe.new")
	if err := os.WriteFile(tmp, append(probe, "tampered"...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(rootfs, "usr/bin/probe")); err != nil {
		t.Fatal(err)
	}
	if out := exec("probe " + connect); !strings.Contains(out, "binary integrity check failed") {
		t.Errorf("replaced binary: %q", out)
	}

	stdout, _, _ := e.moat("denials", "--json", "--all", id)
	var sawAncestor bool
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var r struct {
			Action, Binary string
			Ancestors      []string
		}
		json.Unmarshal([]byte(line), &r)
		if r.Action == "allow" && r.Binary == "/usr/bin/probe2" && strings.Contains(strings.Join(r.Ancestors, " "), "/opt/allowed/sh") {
			sawAncestor = true
		}
	}
	if !sawAncestor {
		t.Errorf("no allow record of probe2 with its /opt/allowed/sh ancestor:\n%s", stdout)
	}
	e.mustMoat("delete", "--force", id)
}

// TestNetworkSidecarDeath: with its sidecar killed, the sandbox has no
// egress at all (fail closed), and `moat state`, `moat denials` and the
// decision log say so.
func TestNetworkSidecarDeath(t *testing.T) {
	b := newTestbed(t)
	b.serve(8080, "hello from upstream")
	e := newSandboxEnv(t, networkPolicy(b))
	id := e.id("dead")
	e.mustMoat("run", "-d", "--bundle", netBundle(t, b, "sleep", "60"), id)
	e.waitStatus(id, "running")
	connect := "probe connect 10.200.0.1:3128 " + b.upstream + ":8080 /"
	if out, _, _ := e.moat("exec", id, "sh", "-c", connect); !strings.Contains(out, " 200 ") {
		t.Fatalf("before: %q", out)
	}
	st := e.state(id)
	var pid int
	if _, err := fmt.Sscanf(st.Annotations["dev.moat.sidecar"], "running (pid %d)", &pid); err != nil || pid <= 0 {
		t.Fatalf("state annotation %q: %v", st.Annotations["dev.moat.sidecar"], err)
	}
	// The sidecar runs unprivileged: nobody, three capabilities
	// (CAP_DAC_READ_SEARCH, CAP_NET_ADMIN for the NFQUEUE verdicts,
	// CAP_SYS_PTRACE), no new privileges, under a seccomp filter.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000081004", "CapBnd:\t0000000000081004", "NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t2"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("sidecar /proc/%d/status lacks %q:\n%s", pid, want, status)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Gone, or a zombie (whoever reaps moat's orphans may be slow).
	for i := 0; i < 50; i++ {
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); len(cmdline) == 0 {
			break
		}
		sleepBriefly()
	}
	// The proxy's port is closed: refused. A direct connection is not
	// refused any more: its SYN goes to the NFQUEUE the dead sidecar read,
	// and the kernel drops what a queue without a listener gets (no bypass
	// flag, fail closed), so the probe's 5 s connect times out ("ERR ...
	// i/o timeout", or ETIMEDOUT). Either way, nothing gets through.
	out, _, _ := e.moat("exec", id, "sh", "-c", connect+"; probe dial tcp "+b.upstream+":8080")
	proxied, direct, _ := strings.Cut(out, "\n")
	direct = strings.TrimSpace(direct)
	if proxied != "ECONNREFUSED" || (direct != "ETIMEDOUT" && !(strings.HasPrefix(direct, "ERR ") && strings.Contains(direct, "timeout"))) {
		t.Errorf("without its sidecar the sandbox still has egress: %q", out)
	}
	if st := e.state(id); !strings.Contains(st.Annotations["dev.moat.sidecar"], "not running") {
		t.Errorf("state after the kill: %v", st.Annotations)
	}
	stdout, stderr, _ := e.moat("denials", id)
	if !strings.Contains(stderr, "not running") || !strings.Contains(stdout, "engine:sidecar") {
		t.Errorf("denials after the kill:\nstdout %s\nstderr %s", stdout, stderr)
	}
	e.mustMoat("delete", "--force", id)
}
