package confine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// threads says which threads a confinement step changes. Credentials,
// no_new_privs, Landlock domains, seccomp filters and network namespaces
// are per thread in Linux.
type threads bool

const (
	// everyThread: the process goes on running (moat-init in reap mode,
	// the sidecar), so every Go thread is changed, each change a
	// stop-the-world round (syscall.AllThreadsSyscall, which is why the
	// binaries must be built with CGO_ENABLED=0).
	everyThread threads = true
	// execThread: the calling thread (locked, the main one) execs the
	// program next, and execve ends every other thread, so changing the
	// calling thread alone is enough.
	execThread threads = false
)

// syscall makes one system call on the threads t names.
func (t threads) syscall(trap, a1, a2, a3 uintptr) syscall.Errno {
	if t == everyThread {
		_, _, errno := syscall.AllThreadsSyscall(trap, a1, a2, a3)
		return errno
	}
	_, _, errno := unix.RawSyscall(trap, a1, a2, a3)
	return errno
}

// prctl is prctl(2) on the threads t names.
func (t threads) prctl(option, arg2, arg3 uintptr) error {
	if errno := t.syscall(unix.SYS_PRCTL, option, arg2, arg3); errno != 0 {
		return errno
	}
	return nil
}
