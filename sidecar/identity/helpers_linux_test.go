package identity

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The test binary doubles as the connecting program: with helperEnv set
// it runs one of these modes instead of the tests.
const (
	helperEnv  = "MOAT_IDENTITY_TEST_HELPER"
	helperAddr = "MOAT_IDENTITY_TEST_ADDR"
	helperNext = "MOAT_IDENTITY_TEST_NEXT"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "connect": // connect once, say so, hold until stdin closes
		c, err := net.Dial("tcp", os.Getenv(helperAddr))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("pid %d\n", os.Getpid())
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck
		c.Close()
	case "serve": // a new connection per line on stdin, the last one held
		var c net.Conn
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if c != nil {
				c.Close()
			}
			var err error
			if c, err = net.Dial("tcp", os.Getenv(helperAddr)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println("ok")
		}
	case "connect-exec": // connect once, say so, then at a line on stdin exec $helperNext in connect mode
		c, err := net.Dial("tcp", os.Getenv(helperAddr))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("pid %d\n", os.Getpid())
		bufio.NewReader(os.Stdin).ReadString('\n') //nolint:errcheck
		c.Close()
		next := os.Getenv(helperNext)
		err = syscall.Exec(next, []string{next}, append(os.Environ(), helperEnv+"=connect"))
		fmt.Fprintln(os.Stderr, "exec:", err)
		os.Exit(1)
	case "ping", "raw": // send an ICMP echo to the listener's host from a ping (or raw) socket, print its id, hold until stdin closes
		typ := unix.SOCK_DGRAM
		if os.Getenv(helperEnv) == "raw" {
			typ = unix.SOCK_RAW
		}
		fd, err := unix.Socket(unix.AF_INET, typ, unix.IPPROTO_ICMP)
		if err != nil {
			fmt.Fprintln(os.Stderr, "icmp socket:", err)
			os.Exit(1)
		}
		host := netip.MustParseAddrPort(os.Getenv(helperAddr)).Addr().As4()
		echo := []byte{8, 0, 0, 0, 0x4d, 0x54, 0, 1} // id 0x4d54, for the raw socket
		if err := unix.Sendto(fd, echo, 0, &unix.SockaddrInet4{Addr: host}); err != nil {
			fmt.Fprintln(os.Stderr, "send echo:", err)
			os.Exit(1)
		}
		id := 0x4d54
		if typ == unix.SOCK_DGRAM { // the kernel set the id: the socket's port
			sa, err := unix.Getsockname(fd)
			if err != nil {
				fmt.Fprintln(os.Stderr, "getsockname:", err)
				os.Exit(1)
			}
			id = sa.(*unix.SockaddrInet4).Port
		}
		fmt.Printf("pid %d id %d\n", os.Getpid(), id)
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck
	case "hold": // hold inherited fds until stdin closes
		fmt.Printf("pid %d\n", os.Getpid())
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck
	}
	os.Exit(0)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// sandboxNet is a pinned netns (the "inner netns") with a veth pair to the
// test's own netns, where a TCP listener stands in for the proxy.
type sandboxNet struct {
	path  string     // the bind-mounted nsfs file
	inner netip.Addr // the inner end's address
	ln    net.Listener
	conns chan net.Conn
}

func newSandboxNet(t testing.TB) *sandboxNet {
	t.Helper()
	needRoot(t)
	s := &sandboxNet{path: filepath.Join(t.TempDir(), "netns"), conns: make(chan net.Conn, 64)}
	if err := os.WriteFile(s.path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := unix.Unshare(unix.CLONE_NEWNET)
		if err == nil {
			err = unix.Mount("/proc/thread-self/ns/net", s.path, "", unix.MS_BIND, "")
		}
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			errc <- fmt.Errorf("return to the test's netns: %w", serr)
			return // leave the thread locked: it dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		unix.Unmount(s.path, unix.MNT_DETACH) //nolint:errcheck
		t.Fatalf("make netns: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(s.path, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount netns: %v", err)
		}
	})

	// Veth: the outer end here, the inner one in the netns, on a random
	// /30 of 10.231.0.0/16.
	var rnd [3]byte
	rand.Read(rnd[:]) //nolint:errcheck
	id := hex.EncodeToString(rnd[:])
	outerName, innerName := "mti"+id+"o", "mti"+id+"i"
	base := fmt.Sprintf("10.231.%d.%d", rnd[0], rnd[1]&0xfc)
	outerIP := netip.MustParseAddr(base).Next()
	innerIP := outerIP.Next()
	nsf, err := os.Open(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer nsf.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outerName}, PeerName: innerName, PeerNamespace: netlink.NsFd(int(nsf.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(outerName); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete veth %s: %v", outerName, err)
			}
		}
	})
	inner, err := netlink.NewHandleAt(netns.NsHandle(int(nsf.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	up := func(h *netlink.Handle, name, cidr string) {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		if cidr != "" {
			a, _ := netlink.ParseAddr(cidr)
			if err := h.AddrAdd(l, a); err != nil {
				t.Fatalf("address %s: %v", name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("up %s: %v", name, err)
		}
	}
	outer, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	up(outer, outerName, outerIP.String()+"/30")
	up(inner, innerName, innerIP.String()+"/30")
	s.inner = innerIP
	up(inner, "lo", "")

	s.ln, err = net.Listen("tcp", netip.AddrPortFrom(outerIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close() })
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
		}
	}()
	return s
}

// accept returns the next connection to the listener as Lookup wants it.
func (s *sandboxNet) accept(t testing.TB) (client, server netip.AddrPort) {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		return c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
	case <-time.After(20 * time.Second):
		t.Fatal("no connection arrived")
	}
	return
}

// child is a process started in the inner netns, in its own process
// group, killed (the group) when the test ends.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// start runs argv inside the netns with nsenter (which execs argv, so the
// child's pid is argv's), helper mode mode, and extra fds from 3 on.
func (s *sandboxNet) start(t testing.TB, mode string, extra []*os.File, argv ...string) *child {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + s.path, "--"}, argv...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperAddr+"="+s.ln.Addr().String())
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(c.stop)
	return c
}

// stop kills the child's process group and waits until it is gone.
func (c *child) stop() {
	c.stdin.Close()
	pgid := c.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGKILL) //nolint:errcheck // the group this test made
	c.cmd.Wait()                         //nolint:errcheck
	for i := 0; i < 200 && syscall.Kill(-pgid, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// finish closes the child's stdin, which ends a helper and the shell
// waiting for it, and waits for the child to exit.
func (c *child) finish(t testing.TB) {
	t.Helper()
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("child did not exit after its stdin closed")
	}
}

// line reads one line of the child's output.
func (c *child) line(t testing.TB) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	r := make(chan res, 1)
	go func() { s, err := c.out.ReadString('\n'); r <- res{strings.TrimSpace(s), err} }()
	select {
	case x := <-r:
		if x.err != nil {
			t.Fatalf("child output: %v", x.err)
		}
		return x.s
	case <-time.After(20 * time.Second):
		t.Fatal("child said nothing")
	}
	return ""
}

// pid reads the "pid N" line of a helper.
func (c *child) pid(t testing.TB) int {
	t.Helper()
	s := c.line(t)
	n, err := strconv.Atoi(strings.TrimPrefix(s, "pid "))
	if err != nil {
		t.Fatalf("expected a pid line, got %q", s)
	}
	return n
}

// copyFile copies src to dst (mode 0755), appending extra bytes.
func copyFile(t testing.TB, src, dst string, extra ...byte) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, append(b, extra...), 0o755); err != nil {
		t.Fatal(err)
	}
}

// helperCopy copies the test binary to dir/name to serve as a program
// with its own path.
func helperCopy(t testing.TB, dir, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	copyFile(t, self, dst)
	return dst
}
