package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/moatsandbox/moat/internal/nsthread"
	"golang.org/x/sys/unix"
)

func newResolver(t testing.TB, s *sandboxNet) *Resolver {
	t.Helper()
	r, err := New(Config{InnerNetNS: s.path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func lookup(t testing.TB, r *Resolver, client, server netip.AddrPort) (*Process, error) {
	t.Helper()
	return r.Lookup(context.Background(), client, server)
}

func TestLookupProcessAndAncestors(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	dir := t.TempDir()
	helper := helperCopy(t, dir, "agent")

	// Started by nsenter, which execs the helper: no ancestor in the
	// netns (the parent is this test).
	c := s.start(t, "connect", nil, helper)
	pid := c.pid(t)
	client, server := s.accept(t)
	p, err := lookup(t, r, client, server)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != pid || p.PID != c.cmd.Process.Pid {
		t.Errorf("pid %d, want %d", p.PID, pid)
	}
	if p.Exe.Path != helper || p.Exe.Fingerprint != fileSHA(t, helper) {
		t.Errorf("exe %+v, want %s (not nsenter) with its SHA-256", p.Exe, helper)
	}
	if len(p.Ancestors) != 0 || len(p.AncestorPIDs) != 0 {
		t.Errorf("ancestors %+v %v, want none: the parent is outside the netns", p.Ancestors, p.AncestorPIDs)
	}
	if !slices.Equal(p.CmdlinePaths, []string{helper}) {
		t.Errorf("cmdline paths %q", p.CmdlinePaths)
	}
	// The same connection again comes from the index.
	if again, err := lookup(t, r, client, server); err != nil || again.PID != pid {
		t.Errorf("second lookup: %+v, %v", again, err)
	}

	// Under a shell: the shell is the ancestor.
	sh := s.start(t, "connect", nil, "/bin/sh", "-c", `"$0"; exit $?`, helper)
	pid = sh.pid(t)
	client, server = s.accept(t)
	p, err = lookup(t, r, client, server)
	if err != nil {
		t.Fatal(err)
	}
	dash, _ := filepath.EvalSymlinks("/bin/sh")
	if p.PID != pid || p.Exe.Path != helper {
		t.Errorf("got pid %d exe %s, want %d %s", p.PID, p.Exe.Path, pid, helper)
	}
	if len(p.Ancestors) != 1 || p.Ancestors[0].Path != dash || p.Ancestors[0].Fingerprint != fileSHA(t, dash) ||
		!slices.Equal(p.AncestorPIDs, []int{sh.cmd.Process.Pid}) {
		t.Errorf("ancestors %+v %v, want %s (pid %d)", p.Ancestors, p.AncestorPIDs, dash, sh.cmd.Process.Pid)
	}
	if !slices.Equal(p.CmdlinePaths, []string{helper, "/bin/sh"}) {
		t.Errorf("cmdline paths %q, want the helper's and the shell's", p.CmdlinePaths)
	}

	if _, err := lookup(t, r, netip.AddrPortFrom(client.Addr(), 1), server); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown tuple: %v, want ErrNotFound", err)
	}
}

func TestLookupSkipsInit(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	dir := t.TempDir()
	helper := helperCopy(t, dir, "agent")
	dash, _ := filepath.EvalSymlinks("/bin/sh")
	fakeInit := filepath.Join(dir, "init")
	copyFile(t, dash, fakeInit)
	r.initPath = fakeInit // what /.moat/init is inside a container

	// bash -> init -> helper: init is left out, bash (above it) is kept.
	c := s.start(t, "connect", nil, "/bin/bash", "-c", `"$0" -c "$1; exit"; exit`, fakeInit, helper)
	c.pid(t)
	client, server := s.accept(t)
	p, err := lookup(t, r, client, server)
	if err != nil {
		t.Fatal(err)
	}
	bash, _ := filepath.EvalSymlinks("/bin/bash")
	if len(p.Ancestors) != 1 || p.Ancestors[0].Path != bash || p.AncestorPIDs[0] != c.cmd.Process.Pid {
		t.Errorf("ancestors %+v %v, want only %s (pid %d)", p.Ancestors, p.AncestorPIDs, bash, c.cmd.Process.Pid)
	}
	if !slices.Contains(p.CmdlinePaths, fakeInit) {
		t.Errorf("cmdline paths %q lack init's argv", p.CmdlinePaths)
	}
}

func TestIntegrity(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	dir := t.TempDir()
	orig := helperCopy(t, dir, "orig")
	prog := filepath.Join(dir, "prog")
	copyFile(t, orig, prog)
	dash, _ := filepath.EvalSymlinks("/bin/sh")
	shell := filepath.Join(dir, "shell")
	copyFile(t, dash, shell)

	run := func() error {
		c := s.start(t, "connect", nil, shell, "-c", `"$0"; exit $?`, prog)
		c.pid(t)
		client, server := s.accept(t)
		_, err := lookup(t, r, client, server)
		c.finish(t) // both exited: their files may be rewritten
		return err
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	first := fileSHA(t, prog)

	copyFile(t, orig, prog, 0) // same path, one more byte
	var ie *IntegrityError
	if err := run(); !errors.As(err, &ie) || ie.Ancestor || ie.Path != prog || ie.Old != first || ie.New != fileSHA(t, prog) {
		t.Fatalf("replaced binary: %v (%+v), want an IntegrityError for %s", err, ie, prog)
	}

	copyFile(t, orig, prog)     // the first content again: trusted
	copyFile(t, dash, shell, 0) // and now the ancestor changes
	if err := run(); !errors.As(err, &ie) || !ie.Ancestor || ie.Path != shell {
		t.Fatalf("replaced ancestor: %v (%+v), want an ancestor IntegrityError for %s", err, ie, shell)
	}
}

// TestExecSeen checks that a process looked up before and then exec'ing
// another program is seen as that program: what the resolver remembers
// of a process holds only while it runs the same executable file.
func TestExecSeen(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	dir := t.TempDir()
	// Two copies with the same content: only the file differs.
	first, second := helperCopy(t, dir, "first"), helperCopy(t, dir, "second")
	c := s.start(t, "connect-exec", nil, "env", helperNext+"="+second, first)
	pid := c.pid(t)
	check := func(what string, client, server netip.AddrPort, want string) {
		t.Helper()
		p, err := lookup(t, r, client, server)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if p.PID != pid || p.Exe.Path != want {
			t.Errorf("%s: pid %d %s, want pid %d %s", what, p.PID, p.Exe.Path, pid, want)
		}
	}
	client, server := s.accept(t)
	check("first lookup", client, server, first)
	check("second lookup, remembered", client, server, first)
	// Another process runs second, so its hash is known when the
	// first one switches to it.
	other := s.start(t, "connect", nil, second)
	other.pid(t)
	oClient, oServer := s.accept(t)
	if p, err := lookup(t, r, oClient, oServer); err != nil || p.Exe.Path != second {
		t.Fatalf("other process: %+v, %v", p, err)
	}
	if _, err := c.stdin.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if got := c.pid(t); got != pid {
		t.Fatalf("after exec: pid %d, want %d", got, pid)
	}
	client, server = s.accept(t)
	check("after exec", client, server, second)
}

func TestDeletedExe(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	prog := helperCopy(t, t.TempDir(), "gone")
	c := s.start(t, "connect", nil, prog)
	c.pid(t)
	client, server := s.accept(t)
	if err := os.Remove(prog); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, r, client, server); !errors.Is(err, ErrDeletedExe) {
		t.Fatalf("deleted executable: %v, want ErrDeletedExe", err)
	}
}

// innerSocket connects a socket made in the inner netns from this
// process, which is outside it.
func innerSocket(t *testing.T, s *sandboxNet) *os.File {
	t.Helper()
	ns, err := unix.Open(s.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	fd, err := nsthread.Socket(ns, func() (int, error) {
		return unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(s.ln.Addr().String())
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inner-socket")
	t.Cleanup(func() { f.Close() })
	return f
}

func TestOutsiderNeverConsidered(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	helper := helperCopy(t, t.TempDir(), "holder")

	// Only this test (outside the netns) holds the socket.
	sock := innerSocket(t, s)
	client, server := s.accept(t)
	if p, err := lookup(t, r, client, server); !errors.Is(err, ErrNoOwner) {
		t.Fatalf("socket held only outside: %+v, %v; want ErrNoOwner", p, err)
	}

	// A process in the netns gets a copy: it is the one and only owner,
	// though this test holds the same inode.
	c := s.start(t, "hold", []*os.File{sock}, helper)
	pid := c.pid(t)
	p, err := lookup(t, r, client, server)
	if err != nil || p.PID != pid {
		t.Fatalf("lookup: %+v, %v; want pid %d", p, err, pid)
	}

	// A second sandbox process with a copy makes it ambiguous.
	c2 := s.start(t, "hold", []*os.File{sock}, helper)
	c2.pid(t)
	if _, err := lookup(t, r, client, server); !errors.Is(err, ErrAmbiguousOwner) {
		t.Fatalf("two holders: %v, want ErrAmbiguousOwner", err)
	}
}

func TestAmbiguousWithForkingAncestor(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	helper := helperCopy(t, t.TempDir(), "agent")
	addr := netip.MustParseAddrPort(s.ln.Addr().String())

	// bash waits for a line, then opens a connection on fd 3 and forks a
	// sleep that inherits it.
	script := `read x; exec 3<>/dev/tcp/` + addr.Addr().String() + `/` + strconv.Itoa(int(addr.Port())) + `; sleep 1000 & echo "pid $!"; wait`
	bash := s.start(t, "", nil, "/bin/bash", "-c", script)

	// A lookup for another connection reads bash's fds before it has
	// the socket.
	other := s.start(t, "connect", nil, helper)
	other.pid(t)
	client, server := s.accept(t)
	if _, err := lookup(t, r, client, server); err != nil {
		t.Fatal(err)
	}

	bash.stdin.Write([]byte("go\n")) //nolint:errcheck
	sleepPid := bash.pid(t)
	client, server = s.accept(t)
	_, err := lookup(t, r, client, server)
	if !errors.Is(err, ErrAmbiguousOwner) {
		t.Fatalf("socket held by bash and its child sleep (%d): %v, want ErrAmbiguousOwner", sleepPid, err)
	}
}

func TestConcurrentLookupsAndClose(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	helper := helperCopy(t, t.TempDir(), "agent")
	type conn struct {
		pid            int
		client, server netip.AddrPort
	}
	var conns []conn
	for i := 0; i < 4; i++ {
		c := s.start(t, "connect", nil, helper)
		pid := c.pid(t)
		client, server := s.accept(t)
		conns = append(conns, conn{pid, client, server})
	}
	errc := make(chan error, 4*10)
	for _, c := range conns {
		go func() {
			for i := 0; i < 10; i++ {
				p, err := r.Lookup(context.Background(), c.client, c.server)
				if err == nil && p.PID != c.pid {
					err = errors.New("wrong pid")
				}
				errc <- err
			}
		}()
	}
	for i := 0; i < cap(errc); i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Lookup(ctx, conns[0].client, conns[0].server); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled lookup: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, r, conns[0].client, conns[0].server); !errors.Is(err, ErrClosed) {
		t.Errorf("lookup after Close: %v", err)
	}
}

// TestLookupICMP names the sender of an ICMP echo request: a ping socket
// by its identifier, and a raw ICMP socket when it is the only one.
func TestLookupICMP(t *testing.T) {
	s := newSandboxNet(t)
	r := newResolver(t, s)
	ns, err := unix.Open(s.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	// Ping sockets for everyone in the inner netns, as Docker sets it.
	if err := nsthread.In(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, mode := range []string{"ping", "raw"} {
		t.Run(mode, func(t *testing.T) {
			prog := helperCopy(t, dir, mode)
			c := s.start(t, mode, nil, prog)
			var pid, id int
			if _, err := fmt.Sscanf(c.line(t), "pid %d id %d", &pid, &id); err != nil {
				t.Fatal(err)
			}
			p, err := r.LookupICMP(context.Background(), s.inner, uint16(id))
			if err != nil {
				t.Fatal(err)
			}
			if p.PID != pid || p.Exe.Path != prog {
				t.Errorf("sender: pid %d %s, want pid %d %s", p.PID, p.Exe.Path, pid, prog)
			}
			if mode == "ping" {
				if _, err := r.LookupICMP(context.Background(), s.inner, uint16(id+1)); !errors.Is(err, ErrNotFound) {
					t.Errorf("another id: %v, want ErrNotFound", err)
				}
			}
			c.finish(t)
		})
	}
}
