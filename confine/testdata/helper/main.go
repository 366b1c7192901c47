// Command helper makes the system calls the confine root tests check and
// prints one result line: "OK" or the errno name ("EPERM", "EACCES", ...).
// It is built with CGO_ENABLED=0 by the tests.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	case "parent-threads":
		parentThreads()
		return
	case "netns":
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
			fmt.Println(name(err))
			return
		}
		fmt.Println(st.Ino)
		return
	case "fg":
		// fg: is this process's group the terminal's foreground group?
		pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
		switch {
		case err != nil:
			fmt.Println(name(err))
		case pgrp == unix.Getpgrp():
			fmt.Println("foreground")
		default:
			fmt.Printf("background: terminal %d, mine %d\n", pgrp, unix.Getpgrp())
		}
		return
	case "dial":
		// dial NETWORK ADDR: a direct connection that bypasses the
		// proxy; UDP writes one datagram and waits for the refusal.
		err = dial(args[0], args[1])
	case "ping":
		// ping ADDR: one ICMP echo request from a ping socket, then
		// the wait for its answer.
		err = ping(args[0])
	case "connect":
		// connect PROXY HOST:PORT PATH: a CONNECT tunnel, then GET PATH
		// through it; prints the proxy's status line, then the body.
		connect(args[0], args[1], args[2])
		return
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
	fmt.Println(name(err))
}

func dial(network, addr string) error {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if network != "udp" {
		return nil
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 16))
	return err
}

func ping(addr string) error {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		return fmt.Errorf("not an IPv4 address: %s", addr)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	// As ping does: ICMP errors reach an unconnected socket only so.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
		return err
	}
	if err := unix.Sendto(fd, []byte{8, 0, 0, 0, 0, 0, 0, 1}, 0, &unix.SockaddrInet4{Addr: [4]byte(ip)}); err != nil {
		return err
	}
	_, _, err = unix.Recvfrom(fd, make([]byte, 64), 0)
	return err
}

func connect(proxy, target, path string) {
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		fmt.Println(name(err))
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		fmt.Println(name(err))
		return
	}
	fmt.Println(strings.TrimSpace(status))
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	if !strings.Contains(status, " 200 ") {
		rest, _ := io.ReadAll(br)
		fmt.Println(string(rest))
		return
	}
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, target)
	resp, _ := io.ReadAll(br)
	if _, body, ok := strings.Cut(string(resp), "\r\n\r\n"); ok {
		fmt.Println(body)
	}
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
func status() { printStatus("/proc/self/status") }

// parentThreads prints the identity lines of every thread of the parent
// (moat-init, in reap mode), one block per thread, blocks separated by a
// line "--".
func parentThreads() {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", os.Getppid()))
	if err != nil {
		fmt.Println(name(err))
		return
	}
	for i, task := range tasks {
		if i > 0 {
			fmt.Println("--")
		}
		printStatus(fmt.Sprintf("/proc/%d/task/%s/status", os.Getppid(), task.Name()))
	}
}

func printStatus(path string) {
	f, err := os.Open(path)
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
