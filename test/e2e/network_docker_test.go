package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// TestDockerNetworkSandbox: under Docker's bridge network, libnetwork
// configures the container's netns (eth0 on the bridge) exactly as with
// runc, while the agent sits in moat's inner netns behind the sidecar.
// dockerd uses a bridge the test makes, without iptables, and the upstream
// server listens on the bridge's own address.
func TestDockerNetworkSandbox(t *testing.T) {
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	requireCommands(t, "dockerd", "docker", "containerd", "ctr", "containerd-shim-runc-v2", "ip")
	dir := shortTempDir(t, "moat-dkn-")
	bin := moatRuntimeBinary(t)
	sandboxBinaries(t)

	n := int(testbedSeq.Add(1)) + os.Getpid()%100*2
	bridge := fmt.Sprintf("moatbr%d", n)
	gw := fmt.Sprintf("10.79.%d.1", n%250)
	subnet := fmt.Sprintf("10.79.%d.0/24", n%250)
	for _, argv := range [][]string{
		{"link", "add", bridge, "type", "bridge"},
		{"addr", "add", gw + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	l, err := net.Listen("tcp", gw+":8080")
	if err != nil {
		t.Fatal(err)
	}
	upstream := &testbed{t: t}
	upstream.serveOn(l, "hello over the bridge")

	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(fmt.Sprintf(`version: 1
filesystem_policy:
  read_only: [/usr, /etc, /proc, /bin]
  read_write: [/tmp]
network_policies:
  upstream:
    endpoints:
      - {host: %s, port: 8080, allowed_ips: [%s]}
    binaries:
      - path: /bin/busybox
`, gw, subnet)), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\n", stateDir, filepath.Join(dir, "logs"))), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startContainerd(t, dir)
	dk := startDocker(t, dir, c, map[string]any{
		"bridge":     bridge,
		"iptables":   false,
		"ip-forward": false,
		"runtimes": map[string]any{
			"moat-net": map[string]any{"path": bin, "runtimeArgs": []string{"--config", cfg, "--policy", pol}},
		},
	})
	docker := dk.docker
	linksBefore := netLinks(t)
	url := "http://" + gw + ":8080/"

	out, code := docker("run", "--rm", "--runtime", "moat-net", dockerImage, "sh", "-c",
		"wget -q -O - "+url+"; echo; wget -q -O - http://"+gw+":9090/ 2>&1; wget -Y off -q -O - "+url+" 2>&1; cat /proc/net/dev | grep -c eth0")
	for _, want := range []string{"hello over the bridge", "403", "refused", "1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("docker run: exit %d, output %q lacks %q", code, out, want)
		}
	}

	name := fmt.Sprintf("moat-dkn-%d", time.Now().UnixNano())
	if out, code := docker("run", "-d", "--name", name, "--runtime", "moat-net", dockerImage, "sleep", "300"); code != 0 {
		t.Fatalf("docker run -d: %s", out)
	}
	full, _ := docker("inspect", "-f", "{{.Id}}", name)
	full = strings.TrimSpace(full)
	// docker exec'd processes obey the same policy, from the inner netns.
	if out, code := docker("exec", name, "sh", "-c", "wget -q -O - "+url+"; echo; wget -Y off -q -O - "+url+" 2>&1; readlink /proc/self/ns/net"); code != 0 ||
		!strings.Contains(out, "hello over the bridge") || !strings.Contains(out, "refused") {
		t.Errorf("docker exec: exit %d, %q", code, out)
	}
	// (docker's output has the container's stderr too: moat-init's
	// Landlock findings, Docker's warnings.)
	nsOf := func(args ...string) string {
		t.Helper()
		out, _ := docker(args...)
		first, _, _ := strings.Cut(out, "\n")
		return strings.TrimSpace(first) + "|" + out
	}
	// A container on --network container:NAME joins NAME's sandbox: the
	// same inner netns, the same sidecar and decision log.
	first := nsOf("exec", name, "readlink", "/proc/self/ns/net")
	joined := nsOf("run", "--rm", "--runtime", "moat-net", "--network", "container:"+name, dockerImage, "sh", "-c",
		"readlink /proc/self/ns/net; wget -q -O - "+url+" >/dev/null && echo joined-ok")
	first, _, _ = strings.Cut(first, "|")
	if !strings.HasPrefix(first, "net:[") || !strings.HasPrefix(joined, first+"|") || !strings.Contains(joined, "joined-ok") {
		t.Errorf("--network container: did not join the sandbox: first %q, joined %q", first, joined)
	}
	recs, stderr, code := runCmdSplit(t, bin, "--config", cfg, "denials", "--all", "--json", full)
	if code != 0 || strings.Count(recs, `"action":"allow"`) < 2 || !strings.Contains(recs, `"engine":"bypass"`) {
		t.Errorf("moat denials %s (docker's --root): exit %d, %s\n%s", full, code, stderr, recs)
	}
	if out, code := docker("rm", "-f", name); code != 0 {
		t.Errorf("docker rm: %s", out)
	}
	for _, sub := range []string{"sandboxes", "networks", "index/netns", "index/containers"} {
		if entries, _ := os.ReadDir(filepath.Join(stateDir, sub)); len(entries) != 0 {
			t.Errorf("%s left after docker rm: %d entries", sub, len(entries))
		}
	}
	if n := netLinks(t); n != linksBefore {
		t.Errorf("moat links: %d before, %d after", linksBefore, n)
	}
}

// runCmdSplit runs argv and returns stdout and stderr apart.
func runCmdSplit(t *testing.T, argv ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return stdout.String(), stderr.String(), code
}
