package confine

import (
	"fmt"
	"strings"
)

// capNames maps capability numbers to OCI names (linux/capability.h).
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Capabilities moat-init itself needs on top of the program's.
const (
	CapSetUID   = "CAP_SETUID"
	CapSetGID   = "CAP_SETGID"
	CapSetPCap  = "CAP_SETPCAP"
	CapSysAdmin = "CAP_SYS_ADMIN"
)

// CapNumber returns the number of an OCI capability name; the CAP_ prefix
// is optional and case does not matter (as runc accepts them).
func CapNumber(name string) (int, error) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	for i, c := range capNames {
		if c == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", name)
}

// CapMask returns the bit mask of a set of capability names.
func CapMask(names []string) (uint64, error) {
	var m uint64
	for _, name := range names {
		n, err := CapNumber(name)
		if err != nil {
			return 0, err
		}
		m |= 1 << uint(n)
	}
	return m, nil
}

// CapNames returns the names of the bits set in mask, in number order.
func CapNames(mask uint64) []string {
	var names []string
	for i, c := range capNames {
		if mask&(1<<uint(i)) != 0 {
			names = append(names, c)
		}
	}
	return names
}
