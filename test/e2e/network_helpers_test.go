package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// testbed is the network a sandbox test runs against, made the way a CNI
// plugin would: an "outer" netns for the container (the spec names its
// path) linked by a veth pair to an "upstream" netns where the test's HTTP
// servers listen, on a private /24 the policies reach through allowed_ips.
type testbed struct {
	t     *testing.T
	outer string // netns path for the spec
	// upstreamNS is the netns path the servers listen in.
	upstreamNS string
	upstream   string // the servers' address (x.x.x.2)
	subnet     string // "10.77.N.0/24"
	names      []string
	// veths are the veth pair's ends: in the outer netns, in the upstream.
	veths [2]string
}

var testbedSeq atomic.Int32

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	requireCommands(t, "ip")
	n := int(testbedSeq.Add(1)) + os.Getpid()%100*2
	tag := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	b := &testbed{
		t:        t,
		outer:    "/run/netns/moat-e2e-out-" + tag,
		upstream: fmt.Sprintf("10.77.%d.2", n%250),
		subnet:   fmt.Sprintf("10.77.%d.0/24", n%250),
		names:    []string{"moat-e2e-out-" + tag, "moat-e2e-up-" + tag},
	}
	b.upstreamNS = "/run/netns/" + b.names[1]
	t.Cleanup(b.cleanup)
	veth := fmt.Sprintf("me2e%d", n)
	b.veths = [2]string{veth + "a", veth + "b"}
	for _, argv := range [][]string{
		{"netns", "add", b.names[0]},
		{"netns", "add", b.names[1]},
		{"link", "add", veth + "a", "netns", b.names[0], "type", "veth", "peer", "name", veth + "b", "netns", b.names[1]},
		{"-n", b.names[0], "addr", "add", fmt.Sprintf("10.77.%d.1/24", n%250), "dev", veth + "a"},
		{"-n", b.names[1], "addr", "add", b.upstream + "/24", "dev", veth + "b"},
		{"-n", b.names[0], "link", "set", veth + "a", "up"},
		{"-n", b.names[1], "link", "set", veth + "b", "up"},
		{"-n", b.names[0], "link", "set", "lo", "up"},
		{"-n", b.names[1], "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	return b
}

func (b *testbed) cleanup() {
	for _, n := range b.names {
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

// serve starts an HTTP server in the upstream netns on port, answering
// every request with body.
func (b *testbed) serve(port int, body string) {
	b.t.Helper()
	l, err := listenIn(b.upstreamNS, fmt.Sprintf("%s:%d", b.upstream, port))
	if err != nil {
		b.t.Fatal(err)
	}
	b.serveOn(l, body)
}

// serveOn serves body on l until the test ends.
func (b *testbed) serveOn(l net.Listener, body string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Via", r.Header.Get("Via"))
		fmt.Fprint(w, body)
	})}
	go srv.Serve(l)
	b.t.Cleanup(func() { srv.Close() })
}

// listenIn opens a TCP listener inside the netns at path: the socket
// belongs to the namespace of the thread that creates it.
func listenIn(path, addr string) (l net.Listener, err error) {
	err = inNetNS(path, func() error {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// netLinks counts the host's veth links moat made (named moat*).
func netLinks(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "moat") {
			n++
		}
	}
	return n
}

// nsMounts counts the nsfs mounts under dir.
func nsMounts(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) && strings.Contains(line, " nsfs ") {
			n++
		}
	}
	return n
}
