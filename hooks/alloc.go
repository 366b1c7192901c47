package hooks

// The global address allocator: sandboxes whose outer network namespace is
// shared (the host's, most of all) each need their own /30 of the address
// pool. An allocation is a file created with O_EXCL under
// <AllocDir>/<outer netns inode>/, named by the /30's network address and
// holding the owner's state directory, so concurrent moat processes never
// hand out one /30 twice and a crashed owner's addresses can be found.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// allocSubnetBits is the size of one allocation: a /30 holds the outer and
// the inner address of a veth pair.
const allocSubnetBits = 30

// staleEmptyAge is how old an allocation file with no owner written (its
// creator died between create and write) must be to count as abandoned.
const staleEmptyAge = time.Minute

// allocNSDir is the allocator directory of the outer namespace with nsfs
// inode ino.
func allocNSDir(allocDir string, ino uint64) string {
	return filepath.Join(allocDir, strconv.FormatUint(ino, 10))
}

// checkPool validates an address pool.
func checkPool(pool netip.Prefix) error {
	if !pool.IsValid() || !pool.Addr().Is4() {
		return fmt.Errorf("address pool %v: need an IPv4 prefix", pool)
	}
	if pool.Bits() > allocSubnetBits {
		return fmt.Errorf("address pool %v: smaller than one /%d", pool, allocSubnetBits)
	}
	if pool.Masked() != pool {
		return fmt.Errorf("address pool %v: host bits set (want %v)", pool, pool.Masked())
	}
	return nil
}

// poolSlots is the number of /30s in pool.
func poolSlots(pool netip.Prefix) int { return 1 << (allocSubnetBits - pool.Bits()) }

// slotSubnet is the i-th /30 of pool.
func slotSubnet(pool netip.Prefix, i int) netip.Prefix {
	v := addrU32(pool.Addr()) + uint32(i)<<(32-allocSubnetBits)
	a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return netip.PrefixFrom(a, allocSubnetBits)
}

// slotOf is the index in pool of the /30 a file is named after, or -1.
func slotOf(pool netip.Prefix, name string) int {
	a, err := netip.ParseAddr(name)
	if err != nil || !a.Is4() || !pool.Contains(a) {
		return -1
	}
	d := addrU32(a) - addrU32(pool.Addr())
	if d&(1<<(32-allocSubnetBits)-1) != 0 {
		return -1
	}
	return int(d >> (32 - allocSubnetBits))
}

// addrU32 is an IPv4 address as a number.
func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// allocate claims the lowest free /30 of pool in nsDir for owner and
// returns the allocation file and the subnet. A /30 that taken reports (an
// address already on the outer netns, e.g. another moat configuration's
// sandbox in the host's netns) is skipped; taken may be nil.
func allocate(nsDir string, pool netip.Prefix, owner string, taken func(netip.Prefix) bool) (string, netip.Prefix, error) {
	if err := checkPool(pool); err != nil {
		return "", netip.Prefix{}, err
	}
	if taken == nil {
		taken = func(netip.Prefix) bool { return false }
	}
	// The common case, a namespace of its own: the first /30 is free.
	if !taken(slotSubnet(pool, 0)) {
		if file, sub, err := claim(nsDir, pool, 0, owner); err == nil || !errors.Is(err, os.ErrExist) {
			return file, sub, err
		}
	}
	for pass := range 2 {
		used, err := usedSlots(nsDir, pool)
		if err != nil {
			return "", netip.Prefix{}, err
		}
		for i := 0; i < poolSlots(pool); i++ {
			if used[i] || taken(slotSubnet(pool, i)) {
				continue
			}
			file, sub, err := claim(nsDir, pool, i, owner)
			if errors.Is(err, os.ErrExist) {
				continue // taken since the listing
			}
			return file, sub, err
		}
		if pass == 0 && reclaimStale(nsDir, pool) == 0 {
			break
		}
	}
	return "", netip.Prefix{}, fmt.Errorf("address pool %v is exhausted in %s", pool, nsDir)
}

// claim creates the allocation file of slot i. A directory removed by a
// concurrent release is made again.
func claim(nsDir string, pool netip.Prefix, i int, owner string) (string, netip.Prefix, error) {
	sub := slotSubnet(pool, i)
	file := filepath.Join(nsDir, sub.Addr().String())
	for range 3 {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(nsDir, 0o700); err != nil {
				return "", netip.Prefix{}, fmt.Errorf("address allocator: %w", err)
			}
			continue
		}
		if err != nil {
			return "", netip.Prefix{}, fmt.Errorf("address allocator: %w", err)
		}
		_, err = f.WriteString(owner + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(file)
			return "", netip.Prefix{}, fmt.Errorf("address allocator: %w", err)
		}
		return file, sub, nil
	}
	return "", netip.Prefix{}, fmt.Errorf("address allocator: %s keeps disappearing", nsDir)
}

// usedSlots lists the slots of pool with an allocation file in nsDir.
func usedSlots(nsDir string, pool netip.Prefix) (map[int]bool, error) {
	ents, err := os.ReadDir(nsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("address allocator: %w", err)
	}
	used := make(map[int]bool, len(ents))
	for _, e := range ents {
		if i := slotOf(pool, e.Name()); i >= 0 {
			used[i] = true
		}
	}
	return used, nil
}

// allocOwner is the state directory recorded in an allocation file.
func allocOwner(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

// reclaimStale removes allocations whose owner is gone (no state file in
// the owner's directory: a sandbox writes its state before allocating and
// releases before removing it) and returns how many it removed.
func reclaimStale(nsDir string, pool netip.Prefix) int {
	ents, _ := os.ReadDir(nsDir)
	n := 0
	for _, e := range ents {
		if slotOf(pool, e.Name()) < 0 {
			continue
		}
		file := filepath.Join(nsDir, e.Name())
		owner, err := allocOwner(file)
		if err != nil {
			continue
		}
		stale := false
		if owner == "" {
			info, err := e.Info()
			stale = err == nil && time.Since(info.ModTime()) > staleEmptyAge
		} else if _, err := os.Stat(filepath.Join(owner, stateFile)); errors.Is(err, os.ErrNotExist) {
			stale = true
		}
		if stale && os.Remove(file) == nil {
			n++
		}
	}
	return n
}

// release frees the allocation file if owner holds it, then removes the
// namespace's directory once it is empty. A missing file is fine.
func release(file, owner string) error {
	got, err := allocOwner(file)
	if errors.Is(err, os.ErrNotExist) {
		removeIfEmpty(filepath.Dir(file))
		return nil
	}
	if err != nil {
		return fmt.Errorf("release address: %w", err)
	}
	if got != owner && got != "" {
		return nil // reclaimed and handed to another sandbox
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release address: %w", err)
	}
	removeIfEmpty(filepath.Dir(file))
	return nil
}

// releaseOwned frees every allocation in nsDir that owner holds: teardown
// after a crash between allocating and recording the allocation.
func releaseOwned(nsDir, owner string) error {
	ents, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release address: %w", err)
	}
	var errs []error
	for _, e := range ents {
		file := filepath.Join(nsDir, e.Name())
		if got, err := allocOwner(file); err == nil && got == owner {
			if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("release address: %w", err))
			}
		}
	}
	removeIfEmpty(nsDir)
	return errors.Join(errs...)
}

// removeIfEmpty removes dir when nothing is left in it.
func removeIfEmpty(dir string) { _ = os.Remove(dir) }
