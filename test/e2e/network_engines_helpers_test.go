package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/test/fixtures"
)

// Helpers for the engine tests with CNI networking (network_engines_test.go):
// nerdctl on its default bridge network and CRI pods via crictl.

// engineTool finds a client that scripts/build-engine-tools.sh builds at a
// pinned version (Debian packages neither crictl nor nerdctl): $env, else
// that script's build in the CI cache (pinned is its directory there),
// else PATH. The test skips when there is none.
func engineTool(t *testing.T, env, name, pinned string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	cache := os.Getenv("MOAT_CI_CACHE")
	if cache == "" {
		cache = "/var/tmp/moat-ci"
	}
	if p, err := exec.LookPath(filepath.Join(cache, pinned, name)); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Skipf("skipping: %s not found (set %s, or run scripts/build-engine-tools.sh, which scripts/setup-and-test.sh runs)", name, env)
	return ""
}

// cniBinDir is where Debian's containernetworking-plugins installs the
// plugins.
const cniBinDir = "/usr/lib/cni"

// requireCNIPlugins skips the test unless the CNI plugins are installed.
func requireCNIPlugins(t *testing.T, plugins ...string) {
	t.Helper()
	for _, p := range plugins {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			t.Skipf("skipping: CNI plugin %s not installed in %s (apt-get install containernetworking-plugins)", p, cniBinDir)
		}
	}
}

// runTool runs argv (with env added to the test's environment) within
// timeout and returns its stdout, stderr and exit code.
func runTool(t *testing.T, timeout time.Duration, env []string, argv ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stdout, stderr, code := runWithFiles(t, cmd, nil)
	if ctx.Err() != nil {
		t.Fatalf("%s: timed out after %s\n%s%s", strings.Join(argv, " "), timeout, stdout, stderr)
	}
	return stdout, stderr, code
}

// cniHost is the host state that CNI plugins change outside the test's own
// directories: iptables chains and rules (ipMasq's nat chains, the
// firewall plugin's filter chains) and the nft tables iptables-nft makes
// for them, the bridge, net.ipv4.ip_forward (the bridge plugin's isGateway
// turns it on), /var/lib/cni (IPAM leases, libcni's result cache) and the
// pod netns containerd's CRI pins under /var/run/netns. It is recorded
// before the test makes a network; at cleanup, which runs after the
// engine's own cleanups, whatever of it is new and was caused by the
// test's containers is removed, and nothing else. The bridge plugin's DEL
// cannot undo ipMasq once the netns is gone, which is how nerdctl calls it,
// so every nerdctl container on the bridge leaves a nat chain behind.
type cniHost struct {
	t      *testing.T
	bridge string
	rules  map[string]map[string]bool // iptables table -> its -S lines
	nft    map[string]bool            // the ip family's nft tables
	fwd    string                     // net.ipv4.ip_forward
	files  map[string]bool            // paths under /var/lib/cni
	// hadStateDir says whether /var/lib/cni existed.
	hadStateDir bool
	netns       map[string]bool // names under /var/run/netns
	// owned name the test's containers in CNI container ids (nerdctl's
	// are "<namespace>-<id>", CRI's the pod ids).
	owned []string
}

const (
	cniStateDir = "/var/lib/cni"
	netnsDir    = "/var/run/netns"
	ipForward   = "/proc/sys/net/ipv4/ip_forward"
)

// iptablesTables are the tables the bridge, portmap and firewall plugins
// write to.
var iptablesTables = []string{"nat", "filter"}

// newCNIHost records the host's CNI state. The test skips when bridge, the
// bridge its network uses, exists already: it would share it with another
// engine and could not tell its leftovers from that engine's.
func newCNIHost(t *testing.T, bridge string) *cniHost {
	t.Helper()
	requireCommands(t, "ip", "iptables", "iptables-restore")
	if _, err := net.InterfaceByName(bridge); err == nil {
		t.Skipf("skipping: bridge %s exists already (another engine's network, or a crashed run's: `ip link del %s`)", bridge, bridge)
	}
	h := &cniHost{t: t, bridge: bridge, rules: map[string]map[string]bool{}}
	for _, table := range iptablesTables {
		h.rules[table] = setOf(h.iptables(table))
	}
	h.nft = setOf(nftTables(t))
	fwd, err := os.ReadFile(ipForward)
	if err != nil {
		t.Fatal(err)
	}
	h.fwd = strings.TrimSpace(string(fwd))
	h.files = setOf(walkPaths(cniStateDir))
	_, err = os.Stat(cniStateDir)
	h.hadStateDir = err == nil
	h.netns = setOf(dirNames(netnsDir))
	t.Cleanup(h.cleanup)
	return h
}

func setOf(items []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range items {
		m[s] = true
	}
	return m
}

// iptables lists a table's chains and rules (`iptables -S`).
func (h *cniHost) iptables(table string) []string {
	h.t.Helper()
	out, stderr, code := runTool(h.t, time.Minute, nil, "iptables", "-w", "-t", table, "-S")
	if code != 0 {
		h.t.Fatalf("iptables -t %s -S: exit %d: %s", table, code, stderr)
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}

// nftTables names the ip family's nftables tables (iptables-nft's).
func nftTables(t *testing.T) []string {
	t.Helper()
	c := &nftables.Conn{}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatalf("list nftables tables: %v", err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	return names
}

// walkPaths lists the paths under root, root excluded.
func walkPaths(root string) []string {
	var paths []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			paths = append(paths, p)
		}
		return nil
	})
	return paths
}

func dirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// own marks the CNI container ids that contain s as the test's.
func (h *cniHost) own(s string) { h.owned = append(h.owned, s) }

func (h *cniHost) isOwned(s string) bool {
	for _, o := range h.owned {
		if strings.Contains(s, o) {
			return true
		}
	}
	return false
}

// ruleOwner is the container id in a CNI rule's comment (`name: "N" id:
// "ID"`, as iptables -S quotes it); "" for rules without one (the
// firewall plugin's shared chains).
func ruleOwner(rule string) string {
	const mark = `id: \"`
	i := strings.Index(rule, mark)
	if i < 0 {
		return ""
	}
	id, _, _ := strings.Cut(rule[i+len(mark):], `\"`)
	return id
}

// newCNIRules is what the test's containers added to table since the
// snapshot: the rules to delete (new, about CNI, and either naming one of
// the test's containers or naming none) and the chains to delete after
// them (new CNI chains left empty and unreferenced).
func (h *cniHost) newCNIRules(table string) (rules, chains []string) {
	now := h.iptables(table)
	deleted := map[string]bool{}
	for _, line := range now {
		if h.rules[table][line] || !strings.HasPrefix(line, "-A ") || !strings.Contains(line, "CNI") {
			continue
		}
		if id := ruleOwner(line); id != "" && !h.isOwned(id) {
			continue
		}
		rules = append(rules, line)
		deleted[line] = true
	}
	for _, line := range now {
		name, ok := strings.CutPrefix(line, "-N ")
		if !ok || h.rules[table][line] || !strings.HasPrefix(name, "CNI-") {
			continue
		}
		used := false
		for _, other := range now {
			if deleted[other] || !strings.HasPrefix(other, "-A ") {
				continue
			}
			f := strings.Fields(other)
			if f[1] == name {
				used = true // it keeps a rule
			}
			for i := 3; i < len(f); i++ {
				if f[i] == name && (f[i-1] == "-j" || f[i-1] == "-g") {
					used = true // a rule jumps to it
				}
			}
		}
		if !used {
			chains = append(chains, name)
		}
	}
	return rules, chains
}

func (h *cniHost) cleanup() {
	t := h.t
	for _, table := range iptablesTables {
		rules, chains := h.newCNIRules(table)
		if len(rules)+len(chains) == 0 {
			continue
		}
		// iptables-restore reads -S's quoting; a table's deletions are
		// one transaction. Rules go in reverse order (jumps before the
		// chains' own rules), chains last.
		var script bytes.Buffer
		fmt.Fprintf(&script, "*%s\n", table)
		for i := len(rules) - 1; i >= 0; i-- {
			fmt.Fprintf(&script, "-D %s\n", strings.TrimPrefix(rules[i], "-A "))
		}
		for _, c := range chains {
			fmt.Fprintf(&script, "-X %s\n", c)
		}
		script.WriteString("COMMIT\n")
		cmd := exec.Command("iptables-restore", "-w", "--noflush")
		cmd.Stdin = &script
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cleanup: iptables-restore: %v: %s\n%s", err, out, script.String())
		} else {
			t.Logf("cleanup: removed %d iptables rules and %d chains from table %s that the CNI plugins left", len(rules), len(chains), table)
		}
	}
	h.removeEmptyNftTables()
	if _, err := net.InterfaceByName(h.bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", h.bridge).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip link del %s: %v: %s", h.bridge, err, out)
		}
	}
	if fwd, _ := os.ReadFile(ipForward); h.fwd == "0" && strings.TrimSpace(string(fwd)) == "1" {
		if err := os.WriteFile(ipForward, []byte("0"), 0o644); err != nil {
			t.Errorf("cleanup: restore net.ipv4.ip_forward=0: %v", err)
		}
	}
	for _, name := range dirNames(netnsDir) {
		if !h.netns[name] && strings.HasPrefix(name, "cni-") {
			t.Errorf("pod network namespace %s/%s left behind; removing it", netnsDir, name)
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
	h.removeCNIFiles()
}

// removeEmptyNftTables deletes the ip family's tables iptables-nft made
// for the test's rules, when they are empty again.
func (h *cniHost) removeEmptyNftTables() {
	c := &nftables.Conn{}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		h.t.Errorf("cleanup: list nftables tables: %v", err)
		return
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		h.t.Errorf("cleanup: list nftables chains: %v", err)
		return
	}
	for _, tb := range tables {
		if h.nft[tb.Name] || (tb.Name != "nat" && tb.Name != "filter") {
			continue
		}
		empty := true
		for _, ch := range chains {
			if ch.Table.Name != tb.Name {
				continue
			}
			rules, err := c.GetRules(tb, ch)
			if ch.Hooknum == nil || err != nil || len(rules) > 0 {
				empty = false
			}
		}
		if empty {
			c.DelTable(tb)
		}
	}
	if err := c.Flush(); err != nil {
		h.t.Errorf("cleanup: delete empty nftables tables: %v", err)
	}
}

// removeCNIFiles removes what the test's containers added under
// /var/lib/cni: result-cache and lease files naming them, the files of
// IPAM directories the test's networks made, and the directories it made
// once empty.
func (h *cniHost) removeCNIFiles() {
	paths := walkPaths(cniStateDir)
	var dirs []string
	for _, p := range paths {
		if h.files[p] {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			dirs = append(dirs, p)
			continue
		}
		data, _ := os.ReadFile(p)
		dir := filepath.Dir(p)
		newDir := !h.files[dir] && (dir != cniStateDir || !h.hadStateDir)
		if h.isOwned(filepath.Base(p)) || h.isOwned(string(data)) || newDir {
			if err := os.Remove(p); err != nil {
				h.t.Errorf("cleanup: %v", err)
			}
		}
	}
	if !h.hadStateDir {
		dirs = append(dirs, cniStateDir)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = os.Remove(d) // only when empty
	}
}

// addrIn returns the address of interface ifname inside the netns at path
// that lies in prefix.
func addrIn(t *testing.T, path, ifname string, prefix netip.Prefix) (netip.Addr, error) {
	t.Helper()
	var found netip.Addr
	err := inNetNS(path, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		var all []string
		for _, a := range addrs {
			all = append(all, a.String())
			if p, err := netip.ParsePrefix(a.String()); err == nil && prefix.Contains(p.Addr()) {
				found = p.Addr()
				return nil
			}
		}
		return fmt.Errorf("%s has no address in %s: %v", ifname, prefix, all)
	})
	return found, err
}

// netnsInode is the inode of the network namespace at path.
func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// netnsUsers lists the processes in the network namespace with inode ino.
func netnsUsers(ino uint64) []string {
	var users []string
	paths, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range paths {
		if i, err := netnsInode(p); err == nil && i == ino {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(p)), "cmdline"))
			users = append(users, filepath.Base(filepath.Dir(filepath.Dir(p)))+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return users
}

// sidecarPIDOf is the pid in `moat state`'s dev.moat.sidecar annotation.
func sidecarPIDOf(t *testing.T, st containerState) int {
	t.Helper()
	var pid int
	if _, err := fmt.Sscanf(st.Annotations["dev.moat.sidecar"], "running (pid %d)", &pid); err != nil || pid <= 0 {
		t.Fatalf("container %s: dev.moat.sidecar annotation %q: %v", st.ID, st.Annotations["dev.moat.sidecar"], err)
	}
	return pid
}

// engineState is `moat state` of a container an engine created, under
// the engine's --root.
func engineState(t *testing.T, bin, root, config, id string) containerState {
	t.Helper()
	out, stderr, code := runTool(t, time.Minute, nil, bin, "--root", root, "--config", config, "state", id)
	if code != 0 {
		t.Fatalf("moat --root %s state %s: exit %d: %s", root, id, code, stderr)
	}
	var st containerState
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("moat state %s: %v\n%s", id, err, out)
	}
	return st
}

// waitGone waits until process pid has exited (a zombie counts as gone).
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmdline) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s (pid %d) still runs: %s", what, pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// egressScript is the shell script the engine tests run in the sandbox,
// as the container's own process and through the engine's exec: it
// prints the proxy the sandbox names, an allowed request's answer through
// it (the upstream's body), the proxy's whole answer to a denied request
// (status line, headers, JSON body; busybox wget would print the status
// line only), and what a direct connection to the allowed upstream gets,
// bounded to 5 s so that a connection left to time out shows.
func egressScript(b *testbed) string {
	return fmt.Sprintf(`echo "proxy=$HTTP_PROXY"
wget -q -O - http://%[1]s:8080/
echo
p=${HTTP_PROXY#http://}
printf 'GET http://%[1]s:9090/ HTTP/1.1\r\nHost: %[1]s:9090\r\nConnection: close\r\n\r\n' | nc ${p%%:*} ${p#*:}
echo
timeout 5 wget -Y off -q -O - http://%[1]s:8080/ 2>&1
echo "direct=$?"
`, b.upstream)
}

// checkEgress checks egressScript's output: the proxy is the sandbox's,
// the allowed request got the upstream's body, the denied one moat's 403
// with its JSON body, and the direct connection was refused at once.
func checkEgress(t *testing.T, what, out string, b *testbed, body string) {
	t.Helper()
	// CRI container logs keep lines, not their carriage returns.
	out = strings.ReplaceAll(out, "\r\n", "\n")
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: %s\noutput:\n%s", what, fmt.Sprintf(format, args...), out)
	}
	if !strings.Contains(out, "proxy=http://10.200.0.1:3128\n") {
		fail("HTTP_PROXY is not the sandbox's proxy http://10.200.0.1:3128")
	}
	if !strings.Contains(out, body) {
		fail("the allowed request through the proxy did not get the upstream's %q", body)
	}
	if !strings.Contains(out, "HTTP/1.1 403 Forbidden\n") || !strings.Contains(out, "Content-Type: application/json\n") {
		fail("the denied request did not get a 403 with Content-Type: application/json")
	}
	var denial struct{ Error, Policy, Detail string }
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, `{"error"`) {
			if err := json.Unmarshal([]byte(line), &denial); err != nil {
				fail("403 body %q: %v", line, err)
			}
		}
	}
	if want := fmt.Sprintf("endpoint %s:9090 not in policy 'upstream'", b.upstream); denial.Error != "policy_denied" || denial.Detail != want {
		fail(`403 body is %+v, want error "policy_denied", detail %q`, denial, want)
	}
	if strings.Contains(out, "the other port") {
		fail("the denied upstream answered")
	}
	if !strings.Contains(out, "Connection refused\ndirect=1\n") {
		fail("the direct connection was not refused at once (want busybox wget's \"Connection refused\" and exit 1 within 5 s)")
	}
}

// pauseImage writes an OCI archive of a pause image named ref: the static
// test/fixtures/pause program as the entrypoint, nothing else.
func pauseImage(t *testing.T, dir, ref string) string {
	t.Helper()
	rootfs := filepath.Join(dir, "pause-rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(rootfs, "pause"), "../fixtures/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the pause program: %v\n%s", err, out)
	}
	p := filepath.Join(dir, "pause.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fixtures.OCIArchiveConfig(rootfs, ref, fixtures.ImageConfig{Entrypoint: []string{"/pause"}}, f); err != nil {
		t.Fatal(err)
	}
	return p
}
