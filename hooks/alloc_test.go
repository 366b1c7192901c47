package hooks

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestSlotSubnet(t *testing.T) {
	pool := netip.MustParsePrefix("10.200.0.0/16")
	for i, want := range map[int]string{0: "10.200.0.0/30", 1: "10.200.0.4/30", 64: "10.200.1.0/30", 16383: "10.200.255.252/30"} {
		if got := slotSubnet(pool, i).String(); got != want {
			t.Errorf("slotSubnet(%d) = %s, want %s", i, got, want)
		}
		if got := slotOf(pool, slotSubnet(pool, i).Addr().String()); got != i {
			t.Errorf("slotOf(slotSubnet(%d)) = %d", i, got)
		}
	}
	for _, name := range []string{"10.200.0.1", "10.201.0.0", "fd00::", "junk", ".tmp"} {
		if got := slotOf(pool, name); got != -1 {
			t.Errorf("slotOf(%q) = %d, want -1", name, got)
		}
	}
	if n := poolSlots(pool); n != 16384 {
		t.Errorf("poolSlots = %d", n)
	}
}

func TestCheckPool(t *testing.T) {
	for _, bad := range []string{"10.200.0.1/16", "fd00::/64", "10.0.0.0/31", "0.0.0.0/32"} {
		if err := checkPool(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("checkPool(%s) accepted", bad)
		}
	}
	if err := checkPool(netip.Prefix{}); err == nil {
		t.Error("checkPool(zero) accepted")
	}
	for _, good := range []string{"10.200.0.0/16", "192.168.7.0/30", "100.64.0.0/10"} {
		if err := checkPool(netip.MustParsePrefix(good)); err != nil {
			t.Errorf("checkPool(%s): %v", good, err)
		}
	}
}

// owners makes n sandbox directories that have a state file.
func owners(t *testing.T, n int) []string {
	var dirs []string
	for range n {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, stateFile), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	return dirs
}

func TestAllocateLowestFree(t *testing.T) {
	nsDir := filepath.Join(t.TempDir(), "alloc", "4026531840")
	pool := netip.MustParsePrefix("10.200.0.0/28") // four /30s
	o := owners(t, 5)
	var files []string
	for i := range 4 {
		file, sub, err := allocate(nsDir, pool, o[i], nil)
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		if want := slotSubnet(pool, i); sub != want {
			t.Errorf("allocation %d = %v, want %v", i, sub, want)
		}
		if got, _ := allocOwner(file); got != o[i] {
			t.Errorf("owner of %s = %q", file, got)
		}
		files = append(files, file)
	}
	if _, _, err := allocate(nsDir, pool, o[4], nil); err == nil {
		t.Fatal("allocation from an exhausted pool succeeded")
	}
	// Another owner's release is refused; the owner's frees the slot,
	// which is handed out again.
	if err := release(files[1], o[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(files[1]); err != nil {
		t.Errorf("release by another owner removed the allocation")
	}
	if err := release(files[1], o[1]); err != nil {
		t.Fatal(err)
	}
	if _, sub, err := allocate(nsDir, pool, o[4], nil); err != nil || sub != slotSubnet(pool, 1) {
		t.Errorf("reallocation = %v, %v; want %v", sub, err, slotSubnet(pool, 1))
	}
	if err := release(files[1], o[1]); err != nil { // now o[4]'s
		t.Fatal(err)
	}
	if _, err := os.Stat(files[1]); err != nil {
		t.Errorf("a stale release removed the new owner's allocation")
	}
}

func TestAllocateReclaimsStale(t *testing.T) {
	nsDir := filepath.Join(t.TempDir(), "4026531840")
	pool := netip.MustParsePrefix("10.200.0.0/29") // two /30s
	o := owners(t, 3)
	fileA, _, err := allocate(nsDir, pool, o[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := allocate(nsDir, pool, o[1], nil); err != nil {
		t.Fatal(err)
	}
	// o[0] crashed and its directory was cleaned without a teardown.
	if err := os.Remove(filepath.Join(o[0], stateFile)); err != nil {
		t.Fatal(err)
	}
	file, sub, err := allocate(nsDir, pool, o[2], nil)
	if err != nil || file != fileA || sub != slotSubnet(pool, 0) {
		t.Fatalf("allocate = %s %v %v, want the stale %s", file, sub, err, fileA)
	}
	// An empty allocation file is abandoned only once it is old.
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := allocate(nsDir, pool, o[0], nil); err == nil {
		t.Fatal("a fresh empty allocation was reclaimed")
	}
	old := time.Now().Add(-2 * staleEmptyAge)
	if err := os.Chtimes(file, old, old); err != nil {
		t.Fatal(err)
	}
	if _, _, err := allocate(nsDir, pool, o[0], nil); err != nil {
		t.Fatalf("an old empty allocation was not reclaimed: %v", err)
	}
}

func TestReleaseOwned(t *testing.T) {
	allocDir := t.TempDir()
	nsDir := allocNSDir(allocDir, 42)
	pool := netip.MustParsePrefix("10.200.0.0/16")
	o := owners(t, 2)
	if _, _, err := allocate(nsDir, pool, o[0], nil); err != nil {
		t.Fatal(err)
	}
	other, _, err := allocate(nsDir, pool, o[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := releaseOwned(nsDir, o[0]); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(nsDir); len(ents) != 1 || filepath.Join(nsDir, ents[0].Name()) != other {
		t.Errorf("after releaseOwned: %v, want only %s", ents, other)
	}
	if err := release(other, o[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(nsDir); !os.IsNotExist(err) {
		t.Errorf("empty allocator directory left: %v", err)
	}
	if err := releaseOwned(nsDir, o[1]); err != nil {
		t.Errorf("releaseOwned on a missing directory: %v", err)
	}
}

func TestAllocateConcurrent(t *testing.T) {
	nsDir := filepath.Join(t.TempDir(), "1")
	pool := netip.MustParsePrefix("10.200.0.0/24")
	o := owners(t, 32)
	subs := make([]netip.Prefix, len(o))
	var wg sync.WaitGroup
	for i := range o {
		wg.Go(func() {
			_, sub, err := allocate(nsDir, pool, o[i], nil)
			if err != nil {
				t.Errorf("allocate: %v", err)
			}
			subs[i] = sub
		})
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for _, s := range subs {
		if seen[s] {
			t.Errorf("%v handed out twice", s)
		}
		seen[s] = true
	}
}
