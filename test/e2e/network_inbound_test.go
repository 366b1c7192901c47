package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/internal/nsthread"
	"github.com/moatsandbox/moat/test/fixtures"
)

// TestNetworkInboundAndNames: ports the policy declares are forwarded into
// the sandbox by the sidecar from the outer netns (its addresses and
// 127.0.0.1), other ports stay closed; and the sidecar resolves names the
// way the container would, here from the container's /etc/hosts.
func TestNetworkInboundAndNames(t *testing.T) {
	b := newTestbed(t)
	b.serve(8080, "hello by name")
	pol := fmt.Sprintf(`version: 1
filesystem_policy:
  read_only: [/usr, /etc, /proc, /bin, /www]
  read_write: [/tmp]
network_policies:
  named:
    endpoints:
      - {host: upstream.moat.test, port: 8080, allowed_ips: [%s]}
    binaries:
      - path: /bin/busybox
ports: [8000]
`, b.subnet)
	e := newSandboxEnv(t, pol)
	bundle := netBundle(t, b, "sh", "-c", "httpd -p 8000 -h /www; httpd -p 8001 -h /www; exec sleep 60")
	rootfs := filepath.Join(bundle, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "www"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "www/index.html"), []byte("served from the sandbox\n"), 0o644)
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s upstream.moat.test\n", b.upstream)
	if err := os.WriteFile(filepath.Join(rootfs, "etc/hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	id := e.id("inbound")
	e.mustMoat("run", "-d", "--bundle", bundle, id)
	e.waitStatus(id, "running")

	if out, _, code := e.moat("exec", id, "wget", "-q", "-O", "-", "http://upstream.moat.test:8080/"); code != 0 || out != "hello by name" {
		t.Errorf("name from the container's /etc/hosts: exit %d, %q", code, out)
	}
	outerAddr := strings.Replace(b.subnet, ".0/24", ".1", 1) // the engine side of the testbed veth
	get := func(addr string) (string, error) {
		var body string
		err := inNetNS(b.outer, func() error {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
			data, err := io.ReadAll(c)
			body = string(data)
			return err
		})
		return body, err
	}
	var body string
	var err error
	for i := 0; i < 50; i++ { // httpd starts in the background
		if body, err = get("127.0.0.1:8000"); err == nil && strings.Contains(body, "served from the sandbox") {
			break
		}
		sleepBriefly()
	}
	if !strings.Contains(body, "served from the sandbox") {
		t.Fatalf("declared port via 127.0.0.1: %v %q", err, body)
	}
	if body, err := get(outerAddr + ":8000"); err != nil || !strings.Contains(body, "served from the sandbox") {
		t.Errorf("declared port via the engine's address %s: %v %q", outerAddr, err, body)
	}
	if body, err := get("10.200.0.2:8001"); err == nil {
		t.Errorf("an undeclared port answered: %q", body)
	}
	if body, err := get("127.0.0.1:8001"); err == nil {
		t.Errorf("an undeclared port is forwarded: %q", body)
	}
	if recs, _, _ := e.moat("denials", "--all", "--json", id); !strings.Contains(recs, `"engine":"inbound"`) {
		t.Errorf("no inbound record:\n%s", recs)
	}
	e.mustMoat("delete", "--force", id)
}

// inNetNS runs fn on a thread in the netns at path. The thread goes back
// to its own netns afterwards: a thread left behind could be the process's
// main thread, which Go never ends, and would keep the namespace alive.
func inNetNS(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return nsthread.In(int(f.Fd()), fn)
}

// TestNetworkStartWaitsForInit: `moat start` returns only once moat-init
// is in the sandbox's inner netns, so whoever reads /proc/PID/ns/net right
// after start (poststart hooks, engines) sees the final namespace.
func TestNetworkStartWaitsForInit(t *testing.T) {
	b := newTestbed(t)
	e := newSandboxEnv(t, networkPolicy(b))
	var outer unix.Stat_t
	if err := unix.Stat(b.outer, &outer); err != nil {
		t.Fatal(err)
	}
	bundle := netBundle(t, b, "sleep", "30")
	for i := 0; i < 5; i++ {
		id := e.id("start")
		e.mustMoat("create", "--bundle", bundle, id)
		e.mustMoat("start", id)
		pid := e.state(id).Pid
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino == outer.Ino {
			t.Errorf("run %d: right after start, the init (pid %d) is still in the outer netns", i, pid)
		}
		e.mustMoat("delete", "--force", id)
	}
}

// TestSandboxDuplicateID: creating a container under an id in use fails
// with runc's message and leaves the existing container's sandbox alone
// (its network state is keyed by the id); deleting it then leaves nothing.
func TestSandboxDuplicateID(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	id := e.id("dup")
	bundle := sandboxBundle(t, "sleep", "30")
	e.mustMoat("run", "-d", "--bundle", bundle, id)
	e.waitStatus(id, "running")
	if _, stderr, code := e.moat("create", "--bundle", bundle, id); code == 0 || !strings.Contains(stderr, "container with given ID already exists") {
		t.Errorf("duplicate create: exit %d, %s", code, stderr)
	}
	if out, stderr, code := e.moat("exec", id, "sh", "-c", "echo still-sandboxed; cat /opt/secret 2>&1; true"); code != 0 || !strings.Contains(out, "still-sandboxed") || !strings.Contains(out, "Permission denied") {
		t.Errorf("the first container after a duplicate create: exit %d, %q, %s", code, out, stderr)
	}
	e.mustMoat("delete", "--force", id)
}

// TestSandboxNetSysctls: the spec's net.* sysctls hold in the agent's
// netns too (Docker sets ip_unprivileged_port_start=0 so that an
// unprivileged server can bind port 80).
func TestSandboxNetSysctls(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	bundle := sandboxBundle(t, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
	spec, err := fixtures.ReadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
	if err := fixtures.WriteSpec(bundle, spec); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := e.moat("run", "--bundle", bundle, e.id("sysctl")); code != 0 || out != "0\n" {
		t.Errorf("exit %d, stdout %q, stderr %s", code, out, stderr)
	}
}
