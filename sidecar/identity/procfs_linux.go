package identity

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Small procfs readers that use the caller's buffers and few syscalls:
// a lookup's budget is counted in syscalls.

// listFds returns pid's open fds in ascending order; false when the
// process is gone or unreadable.
func (t *procTable) listFds(pid int) ([]int32, bool) {
	var fds []int32
	err := eachEntry(t.root+"/"+strconv.Itoa(pid)+"/fd", t.dirBuf, func(n int, _ int64) bool {
		fds = append(fds, int32(n))
		return true
	})
	if err != nil {
		return nil, false
	}
	slices.Sort(fds)
	return fds, true
}

// readFd returns the socket inode that pid's fd refers to (0 when it is
// not a socket), and false when the fd or the process is gone.
func (t *procTable) readFd(pid int, fd int32) (uint64, bool) {
	t.fdReads++
	path := t.root + "/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(int(fd))
	n, err := unix.Readlink(path, t.linkBuf)
	if err != nil {
		return 0, false
	}
	return socketInode(t.linkBuf[:n]), true
}

// socketInode parses "socket:[INODE]"; 0 for anything else.
func socketInode(link []byte) uint64 {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != ']' {
		return 0
	}
	ino, err := strconv.ParseUint(string(rest[:len(rest)-1]), 10, 64)
	if err != nil {
		return 0
	}
	return ino
}

// eachEntry calls fn with each all-digit name in directory dir.
func eachEntry(dir string, buf []byte, fn func(n int, pos int64) bool) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var pos int64
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		var more bool
		if pos, more = eachNumber(buf[:n], pos, fn); !more {
			return nil
		}
	}
}

// eachNumber calls fn with each all-digit name in a getdents64 buffer
// (struct linux_dirent64: ino, off, reclen, type, name) and the entry's
// position in the directory (pos is the first one's), a place to seek
// back to, until fn returns false. It returns the position after the
// last entry it went past, and whether fn wanted more.
func eachNumber(buf []byte, pos int64, fn func(n int, pos int64) bool) (int64, bool) {
	const nameOff = 19
	for len(buf) >= nameOff {
		reclen := int(binary.NativeEndian.Uint16(buf[16:]))
		if reclen < nameOff || reclen > len(buf) {
			break
		}
		name := buf[nameOff:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if n, ok := atoi(name); ok && !fn(n, pos) {
			return pos, false
		}
		pos = int64(binary.NativeEndian.Uint64(buf[8:])) // d_off: where the next entry is
		buf = buf[reclen:]
	}
	return pos, true
}

// atoi parses a short non-empty decimal without allocating.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// readSmall reads a procfs file into buf (truncating what does not fit).
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}
