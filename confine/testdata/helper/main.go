// Command helper makes the system calls the confine root tests check and
// prints one result line: "OK" or the errno name ("EPERM", "EACCES", ...).
// It is built with CGO_ENABLED=0 by the tests.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper CMD [ARGS]")
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "write":
		err = os.WriteFile(args[0], []byte("x"), 0o644)
	case "read":
		_, err = os.ReadFile(args[0])
	case "socket":
		var fd int
		fd, err = unix.Socket(atoi(args[0]), atoi(args[1]), atoi(args[2]))
		if err == nil {
			unix.Close(fd)
		}
	case "ptrace":
		err = errno(unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0))
	case "clone3":
		// A NULL clone_args of size 0 is EINVAL for the kernel; the
		// filter answers first.
		err = errno(unix.RawSyscall(unix.SYS_CLONE3, 0, 0, 0))
	case "memfd":
		var fd int
		fd, err = unix.MemfdCreate("moat-test", 0)
		if err == nil {
			unix.Close(fd)
		}
	case "unshare-net":
		err = unix.Unshare(unix.CLONE_NEWNET)
	case "mount":
		err = unix.Mount("none", args[0], "tmpfs", 0, "")
	case "bpf":
		err = errno(unix.Syscall(unix.SYS_BPF, 0, 0, 0))
	case "seccomp-filter":
		insn := []unix.SockFilter{{Code: 0x06, K: 0x7fff0000}} // ret ALLOW
		prog := unix.SockFprog{Len: 1, Filter: &insn[0]}
		err = errno(unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))))
	case "prctl-seccomp":
		insn := []unix.SockFilter{{Code: 0x06, K: 0x7fff0000}}
		prog := unix.SockFprog{Len: 1, Filter: &insn[0]}
		err = unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0)
	case "setuid0":
		err = errno(unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0))
	case "status":
		status()
		return
	case "netns":
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
			fmt.Println(name(err))
			return
		}
		fmt.Println(st.Ino)
		return
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
	fmt.Println(name(err))
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

func errno(_, _ uintptr, e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func name(err error) string {
	if err == nil {
		return "OK"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return "ERR " + err.Error()
}

// status prints the identity lines of /proc/self/status.
func status() {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Println(name(err))
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, _, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters":
			fmt.Println(sc.Text())
		}
	}
}
