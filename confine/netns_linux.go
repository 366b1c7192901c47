package confine

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// joinNetNS moves the threads t names into the planned network namespace, closes
// the fd it came from (the program must not inherit it) and checks that the
// thread's namespace now has the planned inode. Any mismatch fails the
// start: running the program in the wrong namespace would bypass the proxy.
// A process already there (the runtime made the inner netns the
// container's own) skips the setns, and with it a stop-the-world round in
// reap mode: its threads all descend from this one and none has changed
// namespace.
func joinNetNS(ns *NetNS, t threads) error {
	fd := ns.FD
	if fd == 0 {
		var err error
		if fd, err = findNetNS(ns.Inode); err != nil {
			return err
		}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("netns fd %d: %w", fd, err)
	}
	if st.Ino != ns.Inode {
		return fmt.Errorf("netns fd %d has inode %d, the plan expects %d", fd, st.Ino, ns.Inode)
	}
	if cur, err := threadNetNS(); err == nil && cur == ns.Inode {
		return nil
	}
	if errno := t.syscall(unix.SYS_SETNS, uintptr(fd), unix.CLONE_NEWNET, 0); errno != 0 {
		return fmt.Errorf("setns into the sandbox network namespace: %w", errno)
	}
	cur, err := threadNetNS()
	if err != nil {
		return err
	}
	if cur != ns.Inode {
		return fmt.Errorf("after setns the network namespace has inode %d, the plan expects %d", cur, ns.Inode)
	}
	return nil
}

// threadNetNS returns the inode of the calling thread's network namespace
// (nsfs inodes are unique on the host).
func threadNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("check network namespace: %w", err)
	}
	return st.Ino, nil
}

// findNetNS returns the inherited fd above 2 that is a namespace file with
// the given inode. Other inherited fds (the engine's preserved fds) are left
// alone.
func findNetNS(inode uint64) (int, error) {
	fd, err := findInherited(inode, func(fd int, _ *unix.Stat_t) bool {
		var fs unix.Statfs_t
		return unix.Fstatfs(fd, &fs) == nil && fs.Type == unix.NSFS_MAGIC
	})
	if err != nil {
		return -1, fmt.Errorf("find the sandbox network namespace fd: %w", err)
	}
	if fd < 0 {
		return -1, fmt.Errorf("no inherited fd is the sandbox network namespace (inode %d)", inode)
	}
	return fd, nil
}

// readyFD returns the inherited readiness FIFO the plan names, marked
// close-on-exec so that no program inherits it, or -1 when this process
// has none (exec'd processes). It is looked up before Landlock, which may
// hide /proc/self/fd.
func readyFD(r *Ready) (int, error) {
	if r == nil {
		return -1, nil
	}
	fd, err := findInherited(r.Inode, func(_ int, st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFIFO })
	if err != nil || fd < 0 {
		return -1, err
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// signalReady writes one byte to the readiness FIFO fd (from readyFD) and
// closes it; fd -1 does nothing.
func signalReady(fd int) error {
	if fd < 0 {
		return nil
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		return fmt.Errorf("signal readiness: %w", err)
	}
	return nil
}

// findInherited returns the inherited fd above 2 with the given inode that
// ok accepts, or -1.
func findInherited(inode uint64, ok func(fd int, st *unix.Stat_t) bool) (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1, err
	}
	names, err := d.Readdirnames(-1)
	dirfd := int(d.Fd())
	d.Close()
	if err != nil {
		return -1, err
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < 3 || fd == dirfd {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Ino == inode && ok(fd, &st) {
			return fd, nil
		}
	}
	return -1, nil
}
