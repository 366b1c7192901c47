package nsthread

import (
	"errors"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestRunSwitchesAndReturns runs fn in a fresh namespace (unshare), makes
// a socket there with Socket through In, and checks that the socket stays
// in that namespace while no thread of the test is left in it.
func TestRunSwitchesAndReturns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	home := netnsInode(t, threadNetNS)

	ns := -1
	err := Run(func(int) error {
		return unix.Unshare(unix.CLONE_NEWNET)
	}, func() (err error) {
		ns, err = unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	var st unix.Stat_t
	if err := unix.Fstat(ns, &st); err != nil {
		t.Fatal(err)
	}
	inner := st.Ino
	if inner == home {
		t.Fatal("fn ran in the caller's namespace")
	}

	fd, err := Socket(ns, func() (int, error) {
		if got := netnsInode(t, threadNetNS); got != inner {
			return -1, errors.New("Socket's thread is not in the namespace")
		}
		return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sockNS, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sockNS)
	if err := unix.Fstat(sockNS, &st); err != nil || st.Ino != inner {
		t.Errorf("socket's namespace inode %d (%v), want %d", st.Ino, err, inner)
	}
	if got := netnsInode(t, threadNetNS); got != home {
		t.Errorf("the caller's thread moved to namespace %d", got)
	}
}

// TestInFailsWithoutMoving: a bad namespace fd is an error, and fn does
// not run.
func TestInFailsWithoutMoving(t *testing.T) {
	ran := false
	err := In(-1, func() error { ran = true; return nil })
	if err == nil || ran {
		t.Errorf("In(-1): err %v, fn ran %v", err, ran)
	}
	if fd, err := Socket(-1, func() (int, error) { return 0, nil }); err == nil || fd != -1 {
		t.Errorf("Socket(-1): fd %d, err %v", fd, err)
	}
}
