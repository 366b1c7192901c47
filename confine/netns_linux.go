package confine

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// joinNetNS moves every thread into the network namespace open at ns.FD,
// closes the fd (the program must not inherit it) and checks that the
// thread's namespace now has the planned inode. Any mismatch fails the
// start: running the program in the wrong namespace would bypass the proxy.
func joinNetNS(ns *NetNS) error {
	defer unix.Close(ns.FD)
	var st unix.Stat_t
	if err := unix.Fstat(ns.FD, &st); err != nil {
		return fmt.Errorf("netns fd %d: %w", ns.FD, err)
	}
	if st.Ino != ns.Inode {
		return fmt.Errorf("netns fd %d has inode %d, the plan expects %d", ns.FD, st.Ino, ns.Inode)
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_SETNS, uintptr(ns.FD), unix.CLONE_NEWNET, 0); errno != 0 {
		return fmt.Errorf("setns into the sandbox network namespace: %w", errno)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return fmt.Errorf("check network namespace: %w", err)
	}
	if st.Ino != ns.Inode {
		return fmt.Errorf("after setns the network namespace has inode %d, the plan expects %d", st.Ino, ns.Inode)
	}
	return nil
}
