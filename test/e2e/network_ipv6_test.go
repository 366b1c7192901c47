package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNetworkIPv6Upstream: the agent's netns has no IPv6, but the sidecar
// dials upstreams over whatever the outer netns has. A name that resolves
// (here from the container's /etc/hosts) to an IPv6 address on a private
// range the policy's allowed_ips lists is reached through the proxy, by
// CONNECT and by the forward proxy; names the policy allows that resolve
// to IPv6 loopback or to an IPv4-mapped loopback are refused by the SSRF
// guard; the upstream's address is denied as a literal the policy does
// not name; and a direct IPv6 connection is refused like any other.
func TestNetworkIPv6Upstream(t *testing.T) {
	b := newTestbed(t)
	// Unique local addresses (fd00::/8) on the testbed's veth; nodad, so
	// they are usable at once.
	n := strings.Split(b.subnet, ".")[2]
	outer6, up6 := fmt.Sprintf("fd77:%s::1", n), fmt.Sprintf("fd77:%s::2", n)
	for _, argv := range [][]string{
		{"-n", b.names[0], "addr", "add", outer6 + "/64", "dev", b.veths[0], "nodad"},
		{"-n", b.names[1], "addr", "add", up6 + "/64", "dev", b.veths[1], "nodad"},
	} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Skipf("no IPv6 on the testbed (ip %s: %v: %s)", strings.Join(argv, " "), err, out)
		}
	}
	l, err := listenIn(b.upstreamNS, "["+up6+"]:8080")
	if err != nil {
		t.Fatal(err)
	}
	b.serveOn(l, "hello over IPv6")

	pol := fmt.Sprintf(`version: 1
filesystem_policy:
  read_only: [/usr, /etc, /proc, /bin]
  read_write: [/tmp]
network_policies:
  v6:
    endpoints:
      - {host: v6.moat.test, port: 8080, allowed_ips: ["fd77:%s::/64"]}
      - {host: loop6.moat.test, port: 8080}
      - {host: mapped.moat.test, port: 8080}
    binaries:
      - path: /bin/busybox
      - path: /usr/bin/probe
`, n)
	e := newSandboxEnv(t, pol)
	bundle := netBundle(t, b, "sleep", "60")
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s v6.moat.test\n::1 loop6.moat.test\n::ffff:127.0.0.1 mapped.moat.test\n", up6)
	if err := os.WriteFile(filepath.Join(bundle, "rootfs", "etc/hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	id := e.id("v6")
	e.mustMoat("run", "-d", "--bundle", bundle, id)
	e.waitStatus(id, "running")

	for _, tt := range []struct{ name, script, want string }{
		{"forward proxy over IPv6", "wget -q -O - http://v6.moat.test:8080/", "hello over IPv6"},
		{"CONNECT over IPv6", "probe connect 10.200.0.1:3128 v6.moat.test:8080 /", "HTTP/1.1 200 Connection Established\nhello over IPv6"},
		{"IPv6 loopback refused", "probe connect 10.200.0.1:3128 loop6.moat.test:8080 /", `"error":"ssrf_denied"`},
		{"IPv4-mapped loopback refused", "probe connect 10.200.0.1:3128 mapped.moat.test:8080 /", `"error":"ssrf_denied"`},
		{"literal not in policy", "probe connect 10.200.0.1:3128 [" + up6 + "]:8080 /", "endpoint " + up6 + ":8080 not in policy"},
		{"direct IPv6 refused", "probe dial tcp [" + up6 + "]:8080", "ECONNREFUSED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := e.moat("exec", id, "sh", "-c", tt.script)
			if code != 0 || !strings.Contains(stdout, tt.want) {
				t.Errorf("exit %d, stdout %q lacks %q (stderr: %s)", code, stdout, tt.want, stderr)
			}
		})
	}
}
