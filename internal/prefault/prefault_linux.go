// Package prefault maps the read-only part of the running executable
// (code and constant data) into the process's page tables in one
// madvise(MADV_POPULATE_READ) call, as early as package initialisation
// allows. Without it, a Go program's start touches its code page by page,
// one page fault per 64 KiB fault-around window. A fault is cheap on bare
// metal but costs about 30 us in a VM with shadow paging (on the 2-vCPU
// test VM, 486 faults touching all of moat-sidecar's 31 MB took 16 ms,
// populating it 1 ms). moat-sidecar, which links OPA, imports it: its
// start, which runs beside the container's, takes some 130 faults fewer
// (1010 to 880 for `moat-sidecar policy check`). moat and moat-init, with
// smaller binaries, gain nothing measurable.
// The pages are clean copies of the file, shared through the page cache;
// a long-lived process can drop the ones it no longer uses
// (moat-sidecar does, once ready).
//
// Importing the package does it. It uses packages syscall and errors
// only, so it initialises before the heavy packages whose initialisation
// it speeds up. Any failure (no /proc, a kernel
// older than 5.14 without MADV_POPULATE_READ) leaves the process as it
// would have been.
package prefault

import (
	"errors"
	"syscall"
)

// madvPopulateRead is MADV_POPULATE_READ (Linux 5.14).
const madvPopulateRead = 22

func init() { populate() }

// populate maps the executable's read-only pages. Errors are ignored:
// the pages then fault in as they would have.
func populate() {
	eachCodeMapping(func(start, end uintptr) {
		syscall.Syscall(syscall.SYS_MADVISE, start, end-start, madvPopulateRead) //nolint:errcheck
	})
}

// Drop takes the executable's read-only pages out of the process's page
// tables again: a long-lived process calls it once the code that only
// its start runs (package initialisation, setup) is behind it, so that
// those pages leave its RSS. The pages it still uses come back on their
// next touch, from the page cache.
func Drop() error {
	var err error
	listed := eachCodeMapping(func(start, end uintptr) {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_DONTNEED); errno != 0 && err == nil {
			err = errno
		}
	})
	if !listed {
		return errors.New("drop the executable's pages: cannot read /proc/self/exe or /proc/self/maps")
	}
	if err != nil {
		return errors.New("drop the executable's pages: madvise: " + err.Error())
	}
	return nil
}

// eachCodeMapping calls fn with the bounds of each readable, non-writable
// mapping of the running executable: code and constant data, clean
// copies of the file that may be dropped and mapped again at will (a
// writable mapping's pages may hold the program's data). It reports
// whether it could list them.
func eachCodeMapping(fn func(start, end uintptr)) bool {
	var exe [4096]byte
	n, err := syscall.Readlink("/proc/self/exe", exe[:])
	if err != nil || n == len(exe) {
		return false
	}
	maps, ok := readFile("/proc/self/maps")
	if !ok {
		return false
	}
	for len(maps) > 0 {
		line := maps
		if i := indexByte(maps, '\n'); i >= 0 {
			line, maps = maps[:i], maps[i+1:]
		} else {
			maps = nil
		}
		start, end, perms, path, ok := parseMapping(line)
		if ok && path == string(exe[:n]) && perms[0] == 'r' && perms[1] != 'w' {
			fn(start, end)
		}
	}
	return true
}

// parseMapping splits a /proc/PID/maps line:
// "start-end perms offset dev inode path".
func parseMapping(line []byte) (start, end uintptr, perms []byte, path string, ok bool) {
	var fields [6][]byte
	nf := 0
	for i := 0; i < len(line) && nf < 6; {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		j := i
		if nf == 5 {
			j = len(line) // the path may hold spaces
		}
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j > i {
			fields[nf] = line[i:j]
			nf++
		}
		i = j
	}
	if nf < 5 || len(fields[1]) < 4 {
		return 0, 0, nil, "", false
	}
	dash := indexByte(fields[0], '-')
	if dash < 0 {
		return 0, 0, nil, "", false
	}
	start, ok1 := parseHex(fields[0][:dash])
	end, ok2 := parseHex(fields[0][dash+1:])
	if !ok1 || !ok2 || end <= start {
		return 0, 0, nil, "", false
	}
	return start, end, fields[1], string(fields[5]), true
}

func parseHex(b []byte) (uintptr, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uintptr
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// readFile reads a small proc file whole.
func readFile(path string) ([]byte, bool) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 16<<10)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if n == 0 {
			return buf, true
		}
		buf = buf[:len(buf)+n]
	}
}
