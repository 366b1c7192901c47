package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// The network sandbox under engines whose networking is CNI's: nerdctl on
// its default bridge network, and Kubernetes pods through containerd's CRI
// plugin and a RuntimeClass handler (crictl stands in for the kubelet).
// The engine configures the container's (outer) netns as it does with
// runc; the agent sits in moat's inner netns behind the sidecar. The
// upstream servers live in a test netns linked to the host (a private /24
// the policy reaches through allowed_ips), so the sandbox's traffic leaves
// the way a pod's does: through the bridge, the host's forwarding and the
// bridge plugin's masquerading.

// Pinned versions of the clients scripts/build-engine-tools.sh builds.
const (
	nerdctlPinned = "nerdctl-v2.1.2"
	crictlPinned  = "crictl-v1.37.0"
)

// engineSandbox is what both tests share: the upstream, the admin config
// (sandbox on, state and decision logs in the test's directory) and the
// moat binaries.
type engineSandbox struct {
	b        *testbed
	bin      string // moat
	config   string // the admin config
	stateDir string
}

func newEngineSandbox(t *testing.T, dir string) *engineSandbox {
	t.Helper()
	e := &engineSandbox{b: newHostTestbed(t), bin: moatRuntimeBinary(t), stateDir: filepath.Join(dir, "moat-state")}
	sandboxBinaries(t)
	e.b.serve(8080, "hello from upstream")
	e.b.serve(9090, "the other port")
	e.config = filepath.Join(dir, "moat-config.yaml")
	cfg := fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\n", e.stateDir, filepath.Join(dir, "moat-logs"))
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// wrapper writes the runc-compatible binary the engine is given: moat with
// the admin config (and policy, when not "") as global flags, for engines
// that take a binary path but no arguments for it.
func (e *engineSandbox) wrapper(t *testing.T, dir, policyFile string) string {
	t.Helper()
	args := "--config " + e.config
	if policyFile != "" {
		args += " --policy " + policyFile
	}
	p := filepath.Join(dir, "moat")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", e.bin, args)), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkDenials checks `moat denials` of container id: the denied request
// to port 9090 with OpenShell's reason, and the direct connection's
// bypass record, count times each.
func (e *engineSandbox) checkDenials(t *testing.T, id string, count int) {
	t.Helper()
	out, stderr, code := runTool(t, time.Minute, nil, e.bin, "--config", e.config, "denials", "--json", id)
	if code != 0 {
		t.Fatalf("moat denials %s: exit %d: %s", id, code, stderr)
	}
	reason := fmt.Sprintf("endpoint %s:9090 not in policy 'upstream'", e.b.upstream)
	var denied, bypass int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct{ Action, Engine, Host, Reason string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("moat denials line %q: %v", line, err)
		}
		switch {
		case r.Engine == "opa" && r.Action == "deny" && r.Reason == reason:
			denied++
		case r.Engine == "bypass" && r.Action == "reject":
			bypass++
		}
	}
	if denied != count || bypass != count {
		t.Errorf("moat denials %s: %d denials %q and %d bypass rejections, want %d of each:\n%s", id, denied, reason, bypass, count, out)
	}
	human, _, _ := runTool(t, time.Minute, nil, e.bin, "--config", e.config, "denials", id)
	if !strings.Contains(human, "DENIED") || !strings.Contains(human, "[reason:"+reason+"]") {
		t.Errorf("moat denials %s (for people) lacks the denial:\n%s", id, human)
	}
}

// checkStateGone checks that the admin config's state directory holds no
// sandbox any more.
func (e *engineSandbox) checkStateGone(t *testing.T) {
	t.Helper()
	for _, sub := range []string{"sandboxes", "networks", "index/netns", "index/containers"} {
		entries, _ := os.ReadDir(filepath.Join(e.stateDir, sub))
		for _, ent := range entries {
			t.Errorf("moat state left behind: %s/%s", sub, ent.Name())
		}
	}
}

// TestNerdctlNetworkSandbox: `nerdctl run --runtime <moat>` on nerdctl's
// default bridge network. nerdctl's CNI hook gives the netns moat made
// for the container an address on the bridge, the sidecar reaches the
// allowed upstream from there, and the agent gets nothing but the proxy.
func TestNerdctlNetworkSandbox(t *testing.T) {
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	requireCommands(t, "containerd", "ctr", "containerd-shim-runc-v2", "ip")
	requireCNIPlugins(t, "bridge", "host-local", "portmap", "firewall", "tuning")
	nerdctl := engineTool(t, "MOAT_NERDCTL", "nerdctl", nerdctlPinned)
	dir := shortTempDir(t, "moat-ndc-")
	// nerdctl's default network: "bridge" on nerdctl0, its conflist in the
	// test's --cni-netconfpath, on a subnet of the test's (--bridge-ip).
	host := newCNIHost(t, "nerdctl0")
	e := newEngineSandbox(t, dir)
	b := e.b
	n := int(testbedSeq.Add(1)) + os.Getpid()%100*2
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.82.%d.0/24", n%250))
	ns := fmt.Sprintf("moat-nerdctl-%d", os.Getpid())
	host.own(ns + "-") // nerdctl's CNI container ids are <namespace>-<id>
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte(networkPolicy(b)), 0o644); err != nil {
		t.Fatal(err)
	}
	engineRuntime := e.wrapper(t, dir, pol)

	c := startContainerdWith(t, dir, ns, "")
	if out, code := c.ctr(t, "image", "import", writeImage(t, dir, busyboxRef)); code != 0 || !strings.Contains(out, busyboxRef) {
		t.Fatalf("image import: exit %d\n%s", code, out)
	}
	toml := filepath.Join(dir, "nerdctl.toml") // not the host's /etc/nerdctl
	if err := os.WriteFile(toml, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	global := []string{nerdctl, "--address", c.sock, "--namespace", ns, "--data-root", filepath.Join(dir, "nerdctl"),
		"--cni-path", cniBinDir, "--cni-netconfpath", filepath.Join(dir, "cni"), "--bridge-ip", fmt.Sprintf("10.82.%d.1/24", n%250)}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return runTool(t, 3*time.Minute, []string{"NERDCTL_TOML=" + toml}, append(global, args...)...)
	}
	// Runs before containerd stops: nerdctl rm runs the CNI DEL.
	t.Cleanup(func() {
		out, _, _ := run("ps", "-aq", "--no-trunc")
		for _, id := range strings.Fields(out) {
			if out, stderr, code := run("rm", "-f", id); code != 0 {
				t.Errorf("cleanup: nerdctl rm -f %s: exit %d: %s%s", id, code, out, stderr)
			}
		}
	})
	before := countLeaks(t, e.stateDir)

	// The container's own process.
	stdout, stderr, code := run("run", "--rm", "--runtime", engineRuntime, busyboxRef, "sh", "-c", egressScript(b))
	if code != 0 {
		t.Fatalf("nerdctl run --rm: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	checkEgress(t, "nerdctl run", stdout, b, "hello from upstream")

	// A detached container: its outer netns has CNI's address, exec'd
	// processes obey the policy, and moat denials shows the refusals.
	id, stderr, code := run("run", "-d", "--runtime", engineRuntime, "--name", "moat-agent", busyboxRef, "sleep", "300")
	id = strings.TrimSpace(id)
	if code != 0 || len(id) != 64 {
		t.Fatalf("nerdctl run -d: exit %d, id %q: %s", code, id, stderr)
	}
	st := engineState(t, e.bin, filepath.Join("/run/containerd/runc", ns), e.config, id)
	sidecar := sidecarPIDOf(t, st)
	// The sidecar runs in the container's outer netns, where CNI put eth0
	// on the bridge, with the address host-local leased to this container.
	addr, err := addrIn(t, fmt.Sprintf("/proc/%d/ns/net", sidecar), "eth0", subnet)
	if err != nil {
		t.Errorf("the sandbox's outer netns has no address from nerdctl's bridge network: %v", err)
	} else if lease, err := os.ReadFile(filepath.Join(cniStateDir, "networks/bridge", addr.String())); err != nil || !strings.HasPrefix(string(lease), ns+"-"+id) {
		t.Errorf("outer netns address %s is not host-local's lease for %s-%s: %q, %v", addr, ns, id, lease, err)
	}
	stdout, stderr, code = run("exec", "moat-agent", "sh", "-c", egressScript(b)+ifaces)
	if code != 0 {
		t.Fatalf("nerdctl exec: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	checkEgress(t, "nerdctl exec", stdout, b, "hello from upstream")
	if !strings.HasSuffix(stdout, "eth0 lo \n") {
		t.Errorf("nerdctl exec: the agent's netns has other interfaces than moat's eth0 and lo: %q", stdout)
	}
	e.checkDenials(t, id, 1)

	if out, stderr, code := run("rm", "-f", "moat-agent"); code != 0 {
		t.Fatalf("nerdctl rm -f: exit %d: %s%s", code, out, stderr)
	}
	waitGone(t, sidecar, "the sidecar")
	e.checkStateGone(t)
	if after := countLeaks(t, e.stateDir); after.procs != before.procs || after.mounts != before.mounts || after.allocs != before.allocs {
		t.Errorf("left behind: before %+v, after %+v", before, after)
	}
}

// TestCRIPodSandbox: a Kubernetes pod through containerd's CRI plugin with
// moat as a RuntimeClass handler (the runc shim with BinaryName = moat),
// the policy in the pod's annotations. The pause container makes the
// sandbox in the pod's CNI netns; a container of the pod, given the pause
// container's netns, joins that sandbox (the same inner netns and
// sidecar); exec'd processes obey the same policy; and stopping and
// removing the pod leaves nothing behind.
func TestCRIPodSandbox(t *testing.T) {
	fixtures.RequireRoot(t)
	fixtures.RequireBusybox(t)
	requireCommands(t, "containerd", "ctr", "containerd-shim-runc-v2", "ip")
	requireCNIPlugins(t, "bridge", "host-local", "loopback", "firewall")
	crictl := engineTool(t, "MOAT_CRICTL", "crictl", crictlPinned)
	dir := shortTempDir(t, "moat-cri-")
	n := int(testbedSeq.Add(1)) + os.Getpid()%100*2
	bridge := fmt.Sprintf("mtcri%d", n%1000) // not moat*: netLinks counts those
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.81.%d.0/24", n%250))
	host := newCNIHost(t, bridge)
	e := newEngineSandbox(t, dir)
	b := e.b
	// The admin config has no default policy: the embedded default has no
	// network section, so an allowed request proves the pod's annotation
	// reached moat. The pod's containers run as the image's sandbox user,
	// as OpenShell's policies say; the pause image has no users at all.
	engineRuntime := e.wrapper(t, dir, "")
	podPolicy := networkPolicy(b) + "process:\n  run_as_user: sandbox\n  run_as_group: sandbox\n"

	cniDir := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		t.Fatal(err)
	}
	conflist := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": "moat-e2e-pods", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "firewall"}
]}`, bridge, filepath.Join(dir, "ipam"), subnet.String())
	if err := os.WriteFile(filepath.Join(cniDir, "10-moat-e2e.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	const pauseRef = "registry.k8s.io/pause:3.6" // imported below, never pulled
	cri := fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # No CAP_SYS_RESOURCE on the test machines: no negative oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.moat]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["dev.moat.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.moat.options]
        BinaryName = %q
`, pauseRef, cniBinDir, cniDir, engineRuntime)
	c := startContainerdWith(t, dir, "k8s.io", cri)
	for _, img := range []struct{ ref, archive string }{
		{pauseRef, pauseImage(t, dir, pauseRef)},
		{busyboxRef, writeImage(t, dir, busyboxRef)},
	} {
		if out, code := c.ctr(t, "image", "import", img.archive); code != 0 || !strings.Contains(out, img.ref) {
			t.Fatalf("image import %s: exit %d\n%s", img.ref, code, out)
		}
	}
	crictlConfig := filepath.Join(dir, "crictl.yaml")
	if err := os.WriteFile(crictlConfig, []byte(fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\n", c.sock, c.sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	cr := func(args ...string) (string, string, int) {
		t.Helper()
		return runTool(t, 3*time.Minute, nil, append([]string{crictl, "--config", crictlConfig}, args...)...)
	}
	mustCR := func(args ...string) string {
		t.Helper()
		out, stderr, code := cr(args...)
		if code != 0 {
			t.Fatalf("crictl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, stderr)
		}
		return strings.TrimSpace(out)
	}
	// Runs before containerd stops: rmp stops the pod's containers and
	// runs the CNI DEL.
	t.Cleanup(func() {
		out, _, _ := cr("pods", "-q")
		for _, pod := range strings.Fields(out) {
			host.own(pod)
			if out, stderr, code := cr("rmp", "-f", pod); code != 0 {
				t.Errorf("cleanup: crictl rmp -f %s: exit %d: %s%s", pod, code, out, stderr)
			}
		}
	})
	before := countLeaks(t, e.stateDir)

	writeJSON := func(name string, v any) string {
		t.Helper()
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	podJSON := writeJSON("pod.json", map[string]any{
		"metadata":      map[string]any{"name": "moat-agent-pod", "namespace": "moat-e2e", "uid": fmt.Sprintf("moat-e2e-%d", time.Now().UnixNano()), "attempt": 0},
		"hostname":      "moat-agent-pod",
		"log_directory": filepath.Join(dir, "pod-logs"),
		"annotations":   map[string]string{"dev.moat.policy": podPolicy},
		"linux":         map[string]any{},
	})
	agentJSON := writeJSON("agent.json", map[string]any{
		"metadata": map[string]any{"name": "agent"},
		"image":    map[string]any{"image": busyboxRef},
		"command":  []string{"sh", "-c", egressScript(b) + "echo script-done\nexec sleep 300"},
		"log_path": "agent.log",
		"linux":    map[string]any{},
	})

	pod := mustCR("runp", "--runtime", "moat", podJSON)
	host.own(pod)
	var podInfo struct {
		Status struct {
			RuntimeHandler string `json:"runtimeHandler"`
			Network        struct{ IP string }
		}
		Info struct {
			Pid         int
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			} `json:"runtimeSpec"`
		}
	}
	if err := json.Unmarshal([]byte(mustCR("inspectp", "-o", "json", pod)), &podInfo); err != nil {
		t.Fatalf("crictl inspectp: %v", err)
	}
	podNetNS := ""
	for _, ns := range podInfo.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			podNetNS = ns.Path
		}
	}
	podIP, err := netip.ParseAddr(podInfo.Status.Network.IP)
	if podInfo.Status.RuntimeHandler != "moat" || err != nil || !subnet.Contains(podIP) || podNetNS == "" || podInfo.Info.Pid <= 0 {
		t.Fatalf("crictl inspectp %s: handler %q, pod IP %q (want one in %s), netns %q, pause pid %d",
			pod, podInfo.Status.RuntimeHandler, podInfo.Status.Network.IP, subnet, podNetNS, podInfo.Info.Pid)
	}
	podNetIno, err := netnsInode(podNetNS)
	if err != nil {
		t.Fatalf("the pod's netns: %v", err)
	}

	cid := mustCR("create", pod, agentJSON, podJSON)
	mustCR("start", cid)
	// The container's own process runs egressScript; wait for its log.
	var logs string
	for deadline := time.Now().Add(2 * time.Minute); ; {
		out, stderr, _ := cr("logs", cid)
		if logs = out + stderr; strings.Contains(logs, "script-done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent container did not finish its script within 2 minutes; crictl logs:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkEgress(t, "the pod's container", logs, b, "hello from upstream")

	// One sandbox for the pod: the container joined the pause container's
	// inner netns, proxy and sidecar; the sidecar sits in the pod's CNI
	// netns, which has the pod's IP.
	root := "/run/containerd/runc/k8s.io"
	podState, agentState := engineState(t, e.bin, root, e.config, pod), engineState(t, e.bin, root, e.config, cid)
	sidecar := sidecarPIDOf(t, podState)
	if agentState.Annotations["dev.moat.sidecar"] != podState.Annotations["dev.moat.sidecar"] || agentState.Annotations["dev.moat.proxy"] != podState.Annotations["dev.moat.proxy"] {
		t.Errorf("the container is not in the pause container's sandbox:\npause: %v\ncontainer: %v", podState.Annotations, agentState.Annotations)
	}
	if nets, _ := os.ReadDir(filepath.Join(e.stateDir, "networks")); len(nets) != 1 {
		t.Errorf("%d network sandboxes for one pod, want 1", len(nets))
	}
	if ino, err := netnsInode(fmt.Sprintf("/proc/%d/ns/net", sidecar)); err != nil || ino != podNetIno {
		t.Errorf("the sidecar is not in the pod's netns %s: inode %d, %v; want %d", podNetNS, ino, err, podNetIno)
	}
	if addr, err := addrIn(t, podNetNS, "eth0", subnet); err != nil || addr != podIP {
		t.Errorf("the pod's netns: eth0 has %s, %v; want the pod IP %s", addr, err, podIP)
	}
	innerIno, err := netnsInode(fmt.Sprintf("/proc/%d/ns/net", podInfo.Info.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if innerIno == podNetIno {
		t.Errorf("the pause container's process is in the pod's CNI netns, not in moat's inner netns")
	}

	// crictl exec'd processes: the same policy, from the same inner netns.
	stdout, stderr, code := cr("exec", cid, "sh", "-c", egressScript(b)+ifaces+"\nid -un\nreadlink /proc/self/ns/net")
	if code != 0 {
		t.Fatalf("crictl exec: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	checkEgress(t, "crictl exec", stdout, b, "hello from upstream")
	if want := fmt.Sprintf("eth0 lo \nsandbox\nnet:[%d]\n", innerIno); !strings.HasSuffix(stdout, want) {
		t.Errorf("crictl exec: not the policy's user in the pause container's inner netns with moat's eth0 and lo only: output ends %q, want %q", tail(stdout, 50), want)
	}
	// The container's and the exec's denials, in the pod's one log,
	// whichever member is asked.
	e.checkDenials(t, cid, 2)
	e.checkDenials(t, pod, 2)

	// A pod on the host's network (hostNetwork): the pause container's
	// sandbox hangs off the host's netns, and its container joins it: the
	// CRI gives a pod's containers the pause process's /proc/PID/ns/net
	// even then, which is that sandbox's inner netns.
	hostNet := map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}} // NODE
	hostPodJSON := writeJSON("hostpod.json", map[string]any{
		"metadata":      map[string]any{"name": "moat-host-pod", "namespace": "moat-e2e", "uid": fmt.Sprintf("moat-e2e-host-%d", time.Now().UnixNano()), "attempt": 0},
		"log_directory": filepath.Join(dir, "host-pod-logs"),
		"annotations":   map[string]string{"dev.moat.policy": podPolicy},
		"linux":         hostNet,
	})
	hostAgentJSON := writeJSON("hostagent.json", map[string]any{
		"metadata": map[string]any{"name": "host-agent"},
		"image":    map[string]any{"image": busyboxRef},
		"command":  []string{"sleep", "300"},
		"log_path": "host-agent.log",
		"linux":    hostNet,
	})
	hostPod := mustCR("runp", "--runtime", "moat", hostPodJSON)
	hostCid := mustCR("create", hostPod, hostAgentJSON, hostPodJSON)
	mustCR("start", hostCid)
	hostPodState, hostAgentState := engineState(t, e.bin, root, e.config, hostPod), engineState(t, e.bin, root, e.config, hostCid)
	hostSidecar := sidecarPIDOf(t, hostPodState)
	podIno, err1 := netnsInode(fmt.Sprintf("/proc/%d/ns/net", hostPodState.Pid))
	agentIno, err2 := netnsInode(fmt.Sprintf("/proc/%d/ns/net", hostAgentState.Pid))
	if err1 != nil || err2 != nil || podIno != agentIno || sidecarPIDOf(t, hostAgentState) != hostSidecar {
		t.Errorf("hostNetwork pod: its container (netns %d, %v, annotations %v) is not in its pause container's sandbox (netns %d, %v, annotations %v)",
			agentIno, err2, hostAgentState.Annotations, podIno, err1, hostPodState.Annotations)
	}
	mustCR("stopp", hostPod)
	mustCR("rmp", hostPod)
	waitGone(t, hostSidecar, "the hostNetwork pod's sidecar")

	mustCR("stopp", pod)
	mustCR("rmp", pod)
	waitGone(t, sidecar, "the sidecar")
	if _, err := os.Stat(podNetNS); !os.IsNotExist(err) {
		t.Errorf("the pod's netns %s is still there: %v", podNetNS, err)
	}
	for _, ino := range []uint64{podNetIno, innerIno} {
		if users := netnsUsers(ino); len(users) > 0 {
			t.Errorf("processes left in netns %d: %v", ino, users)
		}
	}
	for _, id := range []string{pod, cid} {
		if _, err := os.Stat(filepath.Join(root, id)); !os.IsNotExist(err) {
			t.Errorf("moat's runtime state of %s is still in %s: %v", id, root, err)
		}
	}
	e.checkStateGone(t)
	if after := countLeaks(t, e.stateDir); after.procs != before.procs || after.mounts != before.mounts || after.allocs != before.allocs {
		t.Errorf("left behind: before %+v, after %+v", before, after)
	}
	// Unlike nerdctl's, the CRI's CNI DEL sees the netns: the pod's
	// masquerading rules went with it, and so did its port on the bridge.
	for _, table := range iptablesTables {
		for _, rule := range host.iptables(table) {
			if ruleOwner(rule) == pod {
				t.Errorf("iptables -t %s: the pod's rule left after rmp: %s", table, rule)
			}
		}
	}
	if out, _, _ := runTool(t, time.Minute, nil, "ip", "-o", "link", "show", "master", bridge); strings.TrimSpace(out) != "" {
		t.Errorf("ports left on %s after rmp:\n%s", bridge, out)
	}
}
