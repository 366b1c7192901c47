package prefault

import (
	"encoding/binary"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestParseMapping(t *testing.T) {
	for _, c := range []struct {
		line        string
		start, end  uintptr
		perms, path string
		ok          bool
	}{
		{"00400000-00c62000 r-xp 00000000 08:01 1234 /usr/bin/moat-sidecar", 0x400000, 0xc62000, "r-xp", "/usr/bin/moat-sidecar", true},
		{"7f00aa000000-7f00aa021000 rw-p 00000000 00:00 0 ", 0x7f00aa000000, 0x7f00aa021000, "rw-p", "", true},
		{"00400000-00401000 r--p 00000000 08:01 77 /opt/a b/moat", 0x400000, 0x401000, "r--p", "/opt/a b/moat", true},
		{"00401000-00400000 r--p 00000000 08:01 77 /x", 0, 0, "", "", false}, // end before start
		{"zz-00400000 r--p 0 08:01 77 /x", 0, 0, "", "", false},
		{"", 0, 0, "", "", false},
	} {
		start, end, perms, path, ok := parseMapping([]byte(c.line))
		if ok != c.ok || ok && (start != c.start || end != c.end || string(perms) != c.perms || path != c.path) {
			t.Errorf("%q: %x-%x %q %q %v", c.line, start, end, perms, path, ok)
		}
	}
}

// TestCodeResident checks what the package is for: after populate, every
// page of the executable's code is mapped, used or not. The test first
// drops the code's pages with Drop, as moat-sidecar does once ready. It
// reads which pages are mapped from /proc/self/pagemap.
func TestCodeResident(t *testing.T) {
	probe, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Madvise(probe, madvPopulateRead)
	syscall.Munmap(probe) //nolint:errcheck
	if err == syscall.EINVAL {
		t.Skip("the kernel has no MADV_POPULATE_READ (Linux 5.14)")
	}
	start, end := codeMapping(t)
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pagemap.Close()
	pages := int((end - start) / 4096)
	entries := make([]byte, 8*pages)
	// mapped counts the code's pages present in the page table (bit 63
	// of a pagemap entry).
	mapped := func() int {
		if _, err := pagemap.ReadAt(entries, int64(start/4096*8)); err != nil {
			t.Fatal(err)
		}
		n := 0
		for i := range pages {
			if binary.LittleEndian.Uint64(entries[8*i:])&(1<<63) != 0 {
				n++
			}
		}
		return n
	}
	// The runtime's other threads run code meanwhile and fault some pages
	// back in (64 KiB at a time); on a busy machine, try a few times.
	n := pages
	for range 5 {
		if err := Drop(); err != nil {
			t.Fatal(err)
		}
		if n = mapped(); n <= pages/2 {
			break
		}
	}
	if n > pages/2 {
		t.Fatalf("after dropping the code's pages, %d of %d are mapped", n, pages)
	}
	populate()
	if n := mapped(); n < pages {
		t.Errorf("after populate, %d of the code's %d pages are mapped, want all", n, pages)
	}
}

// codeMapping returns the bounds of the executable's code mapping.
func codeMapping(t *testing.T) (start, end uintptr) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if s, e, perms, path, ok := parseMapping([]byte(line)); ok && string(perms) == "r-xp" && path == exe {
			return s, e
		}
	}
	t.Fatalf("no code mapping of %s in /proc/self/maps", exe)
	return 0, 0
}
