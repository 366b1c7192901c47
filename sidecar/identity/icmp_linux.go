package identity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/moatsandbox/moat/internal/nsthread"
	"golang.org/x/sys/unix"
)

// icmpSockets finds the socket that sent an ICMP echo request in the
// inner netns. sock_diag has no ping sockets, so it reads the netns's
// /proc/net/icmp (ping sockets, whose "port" is the echo identifier) and
// /proc/net/raw (raw sockets, whose "port" is their protocol), opened
// from inside the netns: a /proc/net file shows the netns of whoever
// opened it, and reading it again from offset 0 lists it afresh. Not
// safe for concurrent use.
type icmpSockets struct {
	ping, raw int // -1 when unavailable
	buf       []byte
}

// newICMPSockets opens the two tables in the netns open at nsFd. A
// missing table only means no ICMP attribution.
func newICMPSockets(nsFd int, procRoot string) *icmpSockets {
	s := &icmpSockets{ping: -1, raw: -1}
	open := func(name string) int {
		fd, err := unix.Open(procRoot+"/thread-self/net/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1
		}
		return fd
	}
	if err := nsthread.In(nsFd, func() error {
		s.ping, s.raw = open("icmp"), open("raw")
		return nil
	}); err != nil {
		s.close() // opened, but the thread could not come back
	}
	return s
}

func (s *icmpSockets) close() {
	for _, fd := range []*int{&s.ping, &s.raw} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// inode returns the inode of the ping socket bound to identifier id (on
// src or any address), else of the only raw ICMP socket.
func (s *icmpSockets) inode(src netip.Addr, id uint16) (uint64, error) {
	if !src.Unmap().Is4() {
		return 0, fmt.Errorf("%w: ICMP echo from %v: only IPv4 is looked up", ErrNotFound, src)
	}
	if ino, n, err := s.find(s.ping, src, id); err != nil || n == 1 {
		return ino, err
	}
	ino, n, err := s.find(s.raw, src, unix.IPPROTO_ICMP)
	switch {
	case err != nil:
		return 0, err
	case n > 1:
		return 0, fmt.Errorf("%w: %d raw ICMP sockets could have sent the echo from %v", ErrAmbiguousOwner, n, src)
	case n == 0:
		return 0, fmt.Errorf("%w: no ping socket with id %d and no raw ICMP socket", ErrNotFound, id)
	}
	return ino, nil
}

// find reads the table open at fd and returns the inode of the sockets
// bound to port on src or on any address, and how many there are.
func (s *icmpSockets) find(fd int, src netip.Addr, port uint16) (ino uint64, n int, err error) {
	if fd < 0 {
		return 0, 0, nil
	}
	table, err := s.read(fd)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(table, []byte{'\n'})[1:] {
		addr, p, inode, ok := parseProcNetLine(line)
		if ok && p == port && inode != 0 && (addr == src.Unmap() || addr.IsUnspecified()) {
			ino, n = inode, n+1
		}
	}
	return ino, n, nil
}

// read reads a whole /proc/net table from the start.
func (s *icmpSockets) read(fd int) ([]byte, error) {
	if s.buf == nil {
		s.buf = make([]byte, 64<<10)
	}
	n := 0
	for {
		if n == len(s.buf) {
			s.buf = append(s.buf, make([]byte, len(s.buf))...)
		}
		m, err := unix.Pread(fd, s.buf[n:], int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the netns's ICMP sockets: %w", err)
		}
		if m == 0 {
			return s.buf[:n], nil
		}
		n += m
	}
}

// parseProcNetLine reads the local address, the local port and the inode
// of an IPv4 /proc/net line: "sl local rem st tx:rx tr:when retr uid
// timeout inode ...", the address in hex in host byte order.
func parseProcNetLine(line []byte) (netip.Addr, uint16, uint64, bool) {
	f := bytes.Fields(line)
	if len(f) < 10 {
		return netip.Addr{}, 0, 0, false
	}
	host, port, ok := bytes.Cut(f[1], []byte{':'})
	if !ok || len(host) != 8 {
		return netip.Addr{}, 0, 0, false
	}
	a, err1 := strconv.ParseUint(string(host), 16, 32)
	p, err2 := strconv.ParseUint(string(port), 16, 16)
	inode, err3 := strconv.ParseUint(string(f[9]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return netip.Addr{}, 0, 0, false
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(a))
	return netip.AddrFrom4(b), uint16(p), inode, true
}
