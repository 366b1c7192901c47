package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// dropStartPages takes the pages of the sidecar's own executable that the
// start touched out of its address space: OPA's package initialisation
// and the policy compile run code and read tables that a serving sidecar
// never uses again, and they would stay in its RSS (about 14 MiB of file
// pages with a 10,000-endpoint policy, as much as its heap). Only
// read-only mappings are dropped: their pages are clean copies of the
// file, still in the page cache, and come back on the next touch; a
// writable mapping would lose its data.
func dropStartPages() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return fmt.Errorf("own mappings: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 6 || string(fields[5]) != exe || fields[1][1] == 'w' {
			continue
		}
		span := bytes.SplitN(fields[0], []byte("-"), 2)
		if len(span) != 2 {
			continue
		}
		start, err1 := strconv.ParseUint(string(span[0]), 16, 64)
		end, err2 := strconv.ParseUint(string(span[1]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %x-%x: %w", start, end, errno)
		}
	}
	return sc.Err()
}
