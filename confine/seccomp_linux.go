package confine

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loadSeccomp installs one program on the threads t names (every thread
// with SECCOMP_FILTER_FLAG_TSYNC). Without no_new_privs the kernel wants
// CAP_SYS_ADMIN in the caller's effective set, which is why moat-init loads
// the filters before it drops its identity.
func loadSeccomp(prog SeccompProgram, t threads) error {
	raw, err := DecodeBPF(prog.Instructions)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, in := range raw {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	flags := uintptr(prog.Flags)
	if t == everyThread {
		flags |= unix.SECCOMP_FILTER_FLAG_TSYNC
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno == unix.EACCES:
		return fmt.Errorf("load %s seccomp filter: %w (needs no_new_privs or CAP_SYS_ADMIN)", prog.Name, errno)
	case errno != 0:
		return fmt.Errorf("load %s seccomp filter: %w", prog.Name, errno)
	case r != 0:
		// TSYNC reports the first thread it could not synchronise.
		return fmt.Errorf("load %s seccomp filter: thread %d could not be synchronised", prog.Name, r)
	}
	return nil
}
