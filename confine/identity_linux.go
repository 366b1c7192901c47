package confine

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capabilities are per thread in Linux. Go's syscall.Setgroups/Setgid/Setuid
// already apply to every thread (AllThreadsSyscall when cgo is off); the
// capability calls below go through syscall.AllThreadsSyscall for the same
// reason. That is why moat-init must be built with CGO_ENABLED=0:
// AllThreadsSyscall returns ENOTSUP in a cgo binary, and this package then
// fails closed rather than leaving threads privileged. (libcap's psx would
// do the same with cgo; moat-init has no use for cgo, so the standard
// library is enough.)

// capSets are the planned sets as bit masks.
type capSets struct {
	bounding, effective, permitted, inheritable, ambient uint64
}

func planCapSets(c *Capabilities) (capSets, error) {
	var s capSets
	if c == nil {
		return s, nil
	}
	var err error
	for _, x := range []struct {
		dst   *uint64
		names []string
	}{
		{&s.bounding, c.Bounding}, {&s.effective, c.Effective}, {&s.permitted, c.Permitted},
		{&s.inheritable, c.Inheritable}, {&s.ambient, c.Ambient},
	} {
		if *x.dst, err = CapMask(x.names); err != nil {
			return s, err
		}
	}
	return s, nil
}

// lastCap is the highest capability the kernel knows, probed with
// PR_CAPBSET_READ (which answers EINVAL past it) so that no /proc is needed
// after Landlock.
func lastCap() int {
	c := 0
	for ; c < 64; c++ {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err != nil {
			break
		}
	}
	return c - 1
}

// capHeader and capData are the capset(2) ABI, version 3.
type capHeader struct {
	version uint32
	pid     int32
}

type capData struct {
	effective, permitted, inheritable uint32
}

// dropIdentity switches the threads t names to the planned user and
// capabilities, in runc's order: bounding set, keep-caps, groups, gid,
// uid, clear keep-caps, capset, ambient. The bounding set changes on the
// calling thread alone whatever t says (see below).
func dropIdentity(id Identity, caps *Capabilities, t threads) error {
	sets, err := planCapSets(caps)
	if err != nil {
		return err
	}
	// The bounding set only limits what an execve can gain, and only this
	// thread (locked, the one that execs or forks the program) ever execs,
	// so it is dropped here alone: one prctl per capability rather than
	// one stop-the-world round over every Go thread per capability, which
	// cost tens of milliseconds per start. Every other set changes on the
	// threads t names below.
	last := lastCap()
	for c := 0; c <= last; c++ {
		if sets.bounding&(1<<uint(c)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop %s from the bounding set: %w", capName(c), err)
		}
	}
	// Each call below stops every Go thread (a signal round of about
	// 0.2 ms here), so one that would change nothing is skipped. This
	// thread's ids and sets stand for every thread's: all threads were
	// cloned with the credentials the process started with, and nothing
	// before this point changed those on one thread alone (the bounding
	// set, just dropped here alone, is not compared).
	cur, err := currentCreds()
	if err != nil {
		return err
	}
	uidChanges := !cur.uidsAre(id.UID)
	if uidChanges {
		if err := t.prctl(unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
			return fmt.Errorf("set keep-caps: %w", err)
		}
	}
	if !slices.Equal(cur.groups, sortedGroups(id.AdditionalGids)) {
		var list uintptr
		if len(id.AdditionalGids) > 0 {
			list = uintptr(unsafe.Pointer(&id.AdditionalGids[0]))
		}
		if errno := t.syscall(unix.SYS_SETGROUPS, uintptr(len(id.AdditionalGids)), list, 0); errno != 0 {
			return fmt.Errorf("setgroups %v: %w", id.AdditionalGids, errno)
		}
	}
	if !cur.gidsAre(id.GID) {
		if errno := t.syscall(unix.SYS_SETGID, uintptr(id.GID), 0, 0); errno != 0 {
			return fmt.Errorf("setgid %d: %w", id.GID, errno)
		}
	}
	if uidChanges {
		if errno := t.syscall(unix.SYS_SETUID, uintptr(id.UID), 0, 0); errno != 0 {
			return fmt.Errorf("setuid %d: %w", id.UID, errno)
		}
		if err := t.prctl(unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
			return fmt.Errorf("clear keep-caps: %w", err)
		}
	}

	// After a uid change keep-caps has kept the permitted set but the
	// effective one is cleared: the sets are then always written.
	if uidChanges || cur.effective != sets.effective || cur.permitted != sets.permitted || cur.inheritable != sets.inheritable {
		hdr := &capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
		data := &[2]capData{
			{uint32(sets.effective), uint32(sets.permitted), uint32(sets.inheritable)},
			{uint32(sets.effective >> 32), uint32(sets.permitted >> 32), uint32(sets.inheritable >> 32)},
		}
		if errno := t.syscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(data)), 0); errno != 0 {
			return fmt.Errorf("capset (effective %v, permitted %v, inheritable %v): %w",
				CapNames(sets.effective), CapNames(sets.permitted), CapNames(sets.inheritable), errno)
		}
	}

	// The ambient set, read after the setuid and capset that may have
	// cleared some of it: cleared when it holds anything the plan does
	// not, then raised.
	ambient := currentAmbient(last)
	if ambient&^sets.ambient != 0 {
		if err := t.prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("clear ambient capabilities: %w", err)
		}
		ambient = 0
	}
	for c := 0; c <= last; c++ {
		if sets.ambient&(1<<uint(c)) == 0 || ambient&(1<<uint(c)) != 0 {
			continue
		}
		if err := t.prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c)); err != nil {
			return fmt.Errorf("raise ambient %s: %w", capName(c), err)
		}
	}
	return verifyIdentity(id, sets.permitted&(1<<unix.CAP_SETUID) != 0)
}

// creds are the calling thread's ids, groups and capability sets (the
// ambient set aside: currentAmbient).
type creds struct {
	ruid, euid, suid, rgid, egid, sgid int
	groups                             []uint32 // sorted
	effective, permitted, inheritable  uint64
}

func (c creds) uidsAre(uid uint32) bool {
	return c.ruid == int(uid) && c.euid == int(uid) && c.suid == int(uid)
}

func (c creds) gidsAre(gid uint32) bool {
	return c.rgid == int(gid) && c.egid == int(gid) && c.sgid == int(gid)
}

// currentCreds reads the calling thread's credentials with system calls
// only (no /proc: Landlock may already hide it).
func currentCreds() (creds, error) {
	var c creds
	c.ruid, c.euid, c.suid = unix.Getresuid()
	c.rgid, c.egid, c.sgid = unix.Getresgid()
	groups, err := unix.Getgroups()
	if err != nil {
		return c, fmt.Errorf("getgroups: %w", err)
	}
	for _, g := range groups {
		c.groups = append(c.groups, uint32(g))
	}
	c.groups = sortedGroups(c.groups)
	hdr := &capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]capData
	if _, _, errno := unix.RawSyscall(unix.SYS_CAPGET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data)), 0); errno != 0 {
		return c, fmt.Errorf("capget: %w", errno)
	}
	c.effective = uint64(data[0].effective) | uint64(data[1].effective)<<32
	c.permitted = uint64(data[0].permitted) | uint64(data[1].permitted)<<32
	c.inheritable = uint64(data[0].inheritable) | uint64(data[1].inheritable)<<32
	return c, nil
}

// currentAmbient is the calling thread's ambient set. A kernel without
// ambient capabilities answers EINVAL: an empty set.
func currentAmbient(last int) uint64 {
	var set uint64
	for c := 0; c <= last; c++ {
		if on, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, uintptr(c), 0, 0); err == nil && on == 1 {
			set |= 1 << uint(c)
		}
	}
	return set
}

func sortedGroups(gids []uint32) []uint32 {
	out := slices.Clone(gids)
	slices.Sort(out)
	return slices.Compact(out)
}

// verifyIdentity checks the drop took: the ids are the planned ones and,
// for a non-root target that is not meant to keep CAP_SETUID, setuid(0) now
// fails. The probe runs on this thread only; should it ever succeed, the
// caller exits without running anything.
func verifyIdentity(id Identity, keepsSetuid bool) error {
	if uid, euid := unix.Getuid(), unix.Geteuid(); uid != int(id.UID) || euid != int(id.UID) {
		return fmt.Errorf("after setuid: uid %d euid %d, want %d", uid, euid, id.UID)
	}
	if gid, egid := unix.Getgid(), unix.Getegid(); gid != int(id.GID) || egid != int(id.GID) {
		return fmt.Errorf("after setgid: gid %d egid %d, want %d", gid, egid, id.GID)
	}
	if id.UID != 0 && !keepsSetuid {
		if _, _, errno := unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0); errno == 0 {
			return errors.New("setuid(0) succeeded after the privilege drop")
		}
	}
	return nil
}

func capName(c int) string {
	if c < len(capNames) {
		return capNames[c]
	}
	return fmt.Sprintf("capability %d", c)
}

// setNoNewPrivs sets no_new_privs on the threads t names.
func setNoNewPrivs(t threads) error {
	// Set before the execve (the runtime keeps the spec's no_new_privs
	// for moat-init), it is every thread's: each was cloned from this one.
	if on, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err == nil && on == 1 {
		return nil
	}
	if err := t.prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set no_new_privs: %w (moat-init must be built with CGO_ENABLED=0)", err)
		}
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}
