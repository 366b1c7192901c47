package identity

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProc is a procfs look-alike made of symlinks: PID/ns/net points at
// one of two files standing in for netns, PID/fd/N at "socket:[INODE]" or
// a path. It tests the search without root or real processes.
type fakeProc struct {
	t                  *testing.T
	root, inner, outer string
}

func newFakeProc(t *testing.T) *fakeProc {
	dir := t.TempDir()
	f := &fakeProc{t, filepath.Join(dir, "proc"), filepath.Join(dir, "inner"), filepath.Join(dir, "outer")}
	for _, p := range []string{f.inner, f.outer} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(f.root, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeProc) table() *procTable {
	var st unix.Stat_t
	if err := unix.Stat(f.inner, &st); err != nil {
		f.t.Fatal(err)
	}
	return newProcTable(f.root, uint64(st.Dev), st.Ino)
}

func (f *fakeProc) path(pid int, rest ...string) string {
	return filepath.Join(append([]string{f.root, strconv.Itoa(pid)}, rest...)...)
}

func (f *fakeProc) add(pid int, member bool, fds ...string) {
	for _, d := range []string{"ns", "fd"} {
		if err := os.MkdirAll(f.path(pid, d), 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	f.setNetns(pid, member)
	for fd, target := range fds {
		f.setFd(pid, fd, target)
	}
}

func (f *fakeProc) setNetns(pid int, member bool) {
	ns := f.outer
	if member {
		ns = f.inner
	}
	os.Remove(f.path(pid, "ns", "net"))
	if err := os.Symlink(ns, f.path(pid, "ns", "net")); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeProc) setFd(pid, fd int, target string) {
	p := f.path(pid, "fd", strconv.Itoa(fd))
	os.Remove(p)
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

func sock(ino int) string { return "socket:[" + strconv.Itoa(ino) + "]" }

func TestHoldersSearch(t *testing.T) {
	f := newFakeProc(t)
	for pid := 100; pid < 150; pid++ {
		f.add(pid, true, "/dev/null", "/dev/null", "pipe:[5]")
	}
	for pid := 200; pid < 205; pid++ {
		f.add(pid, false, "/dev/null", sock(999)) // outside, same inode
	}
	tb := f.table()
	check := func(what string, inode uint64, want []int, maxReads uint64, inherited bool) {
		t.Helper()
		before := tb.fdReads
		got, inh := tb.holders(inode)
		if len(got) > 0 && inh != inherited {
			t.Errorf("%s: inherited %v, want %v", what, inh, inherited)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: holders %v, want %v", what, got, want)
		}
		if reads := tb.fdReads - before; maxReads > 0 && reads > maxReads {
			t.Errorf("%s: %d fd reads, want at most %d", what, reads, maxReads)
		}
		if len(got) == 1 {
			tb.markOwner(got[0])
		}
	}

	check("held only outside the netns", 999, nil, 0, true)
	f.add(150, true, "/dev/null", "/dev/null", "/dev/null", sock(1000))
	check("new process", 1000, []int{150}, 5, true) // its 4 fds, then the confirmation
	check("same socket again", 1000, []int{150}, 1, true)

	f.setFd(150, 3, sock(1001)) // closed and reopened at the same number
	check("recent owner's next socket", 1001, []int{150}, 2, false)

	f.setFd(120, 3, sock(1002))
	check("old process, new fd", 1002, []int{120}, 10, false)

	f.setFd(110, 2, sock(1003)) // at the number of a closed pipe
	check("socket at a reused number", 1003, []int{110}, 0, true)

	f.add(151, true, sock(1004))
	f.add(152, true, "/dev/null", sock(1004))
	check("two new processes", 1004, []int{151, 152}, 0, true)

	if err := os.RemoveAll(f.path(150)); err != nil {
		t.Fatal(err)
	}
	check("holder exited", 1001, nil, 0, true)
	if _, ok := tb.procs[150]; ok {
		t.Error("an exited process is still in the table")
	}

	f.add(160, false, sock(1005))
	check("outside", 1005, nil, 0, true)
	f.setNetns(160, true) // like moat-init entering the netns
	check("joined the netns after being seen", 1005, []int{160}, 0, true)
}

func TestParsers(t *testing.T) {
	stat := []byte("4242 (a) b) (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n")
	if ppid, ok := parseStat(stat); !ok || ppid != 17 {
		t.Errorf("parseStat: %d %v", ppid, ok)
	}
	if _, ok := parseStat([]byte("1 (x) S")); ok {
		t.Error("parseStat accepted a short line")
	}
	for in, want := range map[string]uint64{"socket:[12345]": 12345, "socket:[]": 0, "pipe:[1]": 0, "/dev/null": 0, "socket:[1": 0} {
		if got := socketInode([]byte(in)); got != want {
			t.Errorf("socketInode(%q) = %d", in, got)
		}
	}
	args := absoluteArgs([]byte("/usr/bin/python3\x00-c\x00/tmp/x.py\x00/\x00rel/path\x00"))
	if !slices.Equal(args, []string{"/usr/bin/python3", "/tmp/x.py"}) {
		t.Errorf("absoluteArgs: %q", args)
	}
	if args := absoluteArgs(nil); args == nil || len(args) != 0 {
		t.Errorf("absoluteArgs(nil) = %#v, want empty and non-nil", args)
	}
	for in, want := range map[string]int{"0": 0, "123": 123, "": -1, "12a": -1, "self": -1, "1234567890": -1} {
		n, ok := atoi([]byte(in))
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("atoi(%q) = %d", in, n)
		}
	}
}

func TestNewRejectsBadNetns(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without a netns succeeded")
	}
	if _, err := New(Config{InnerNetNS: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("New with a missing netns succeeded")
	}
	if os.Geteuid() == 0 {
		notNS := filepath.Join(t.TempDir(), "file")
		os.WriteFile(notNS, nil, 0o600) //nolint:errcheck
		if _, err := New(Config{InnerNetNS: notNS}); err == nil {
			t.Error("New with a regular file for a netns succeeded")
		}
	}
}
