package confine

import (
	"errors"
	"fmt"
	"syscall"
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

func allThreadsPrctl(option, arg2, arg3 uintptr) error {
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, option, arg2, arg3)
	if errno != 0 {
		return errno
	}
	return nil
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

// dropIdentity switches every thread to the planned user and capabilities,
// in runc's order: bounding set, keep-caps, groups, gid, uid, clear
// keep-caps, capset, ambient.
//
// execThreadOnly drops the bounding set on the calling thread only (see
// below); Harden, for processes that never exec, drops it on every thread.
func dropIdentity(id Identity, caps *Capabilities, execThreadOnly bool) error {
	sets, err := planCapSets(caps)
	if err != nil {
		return err
	}
	// The bounding set only limits what an execve can gain, and only this
	// thread (locked, the one that execs or forks the program) ever execs,
	// so it is dropped here alone: one prctl per capability rather than
	// one stop-the-world round over every Go thread per capability, which
	// cost tens of milliseconds per start. Every other set changes on
	// every thread below.
	last := lastCap()
	for c := 0; c <= last; c++ {
		if sets.bounding&(1<<uint(c)) != 0 {
			continue
		}
		var err error
		if execThreadOnly {
			err = unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		} else {
			err = allThreadsPrctl(unix.PR_CAPBSET_DROP, uintptr(c), 0)
		}
		if err != nil {
			return fmt.Errorf("drop %s from the bounding set: %w", capName(c), err)
		}
	}
	if err := allThreadsPrctl(unix.PR_SET_KEEPCAPS, 1, 0); err != nil {
		return fmt.Errorf("set keep-caps: %w", err)
	}

	gids := make([]int, len(id.AdditionalGids))
	for i, g := range id.AdditionalGids {
		gids[i] = int(g)
	}
	if err := syscall.Setgroups(gids); err != nil {
		return fmt.Errorf("setgroups %v: %w", id.AdditionalGids, err)
	}
	if err := syscall.Setgid(int(id.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", id.GID, err)
	}
	if err := syscall.Setuid(int(id.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", id.UID, err)
	}
	if err := allThreadsPrctl(unix.PR_SET_KEEPCAPS, 0, 0); err != nil {
		return fmt.Errorf("clear keep-caps: %w", err)
	}

	hdr := &capHeader{version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]capData{
		{uint32(sets.effective), uint32(sets.permitted), uint32(sets.inheritable)},
		{uint32(sets.effective >> 32), uint32(sets.permitted >> 32), uint32(sets.inheritable >> 32)},
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(data)), 0); errno != 0 {
		return fmt.Errorf("capset (effective %v, permitted %v, inheritable %v): %w",
			CapNames(sets.effective), CapNames(sets.permitted), CapNames(sets.inheritable), errno)
	}

	if err := allThreadsPrctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for c := 0; c <= last; c++ {
		if sets.ambient&(1<<uint(c)) == 0 {
			continue
		}
		if err := allThreadsPrctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c)); err != nil {
			return fmt.Errorf("raise ambient %s: %w", capName(c), err)
		}
	}
	return verifyIdentity(id, sets.permitted&(1<<unix.CAP_SETUID) != 0)
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

// setNoNewPrivs sets no_new_privs on every thread.
func setNoNewPrivs() error {
	if err := allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set no_new_privs: %w (moat-init must be built with CGO_ENABLED=0)", err)
		}
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}
