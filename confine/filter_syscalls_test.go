//go:build linux && (amd64 || arm64)

package confine

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestSyscallTable checks the hand-written numbers of the build
// architecture's table (nativeTable, in filter_GOARCH_test.go) against
// x/sys.
func TestSyscallTable(t *testing.T) {
	want := map[string]uint32{
		"ptrace": unix.SYS_PTRACE, "bpf": unix.SYS_BPF,
		"process_vm_readv": unix.SYS_PROCESS_VM_READV, "process_vm_writev": unix.SYS_PROCESS_VM_WRITEV,
		"io_uring_setup": unix.SYS_IO_URING_SETUP, "io_uring_enter": unix.SYS_IO_URING_ENTER, "io_uring_register": unix.SYS_IO_URING_REGISTER,
		"mount": unix.SYS_MOUNT, "umount2": unix.SYS_UMOUNT2, "pivot_root": unix.SYS_PIVOT_ROOT,
		"fsopen": unix.SYS_FSOPEN, "fsconfig": unix.SYS_FSCONFIG, "fsmount": unix.SYS_FSMOUNT, "fspick": unix.SYS_FSPICK,
		"move_mount": unix.SYS_MOVE_MOUNT, "open_tree": unix.SYS_OPEN_TREE, "mount_setattr": unix.SYS_MOUNT_SETATTR,
		"open_tree_attr": unix.SYS_OPEN_TREE_ATTR,
		"setns":          unix.SYS_SETNS, "kexec_load": unix.SYS_KEXEC_LOAD, "kexec_file_load": unix.SYS_KEXEC_FILE_LOAD,
		"keyctl": unix.SYS_KEYCTL, "add_key": unix.SYS_ADD_KEY, "request_key": unix.SYS_REQUEST_KEY,
	}
	st := nativeTable
	for i, name := range deniedNames {
		if st.denied[i] != want[name] {
			t.Errorf("%s: table has %d, x/sys has %d", name, st.denied[i], want[name])
		}
	}
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"socket", st.socket, unix.SYS_SOCKET}, {"clone", st.clone, unix.SYS_CLONE},
		{"clone3", st.clone3, unix.SYS_CLONE3}, {"unshare", st.unshare, unix.SYS_UNSHARE},
		{"seccomp", st.seccomp, unix.SYS_SECCOMP}, {"prctl", st.prctl, unix.SYS_PRCTL},
	} {
		if c.got != c.want {
			t.Errorf("%s: table has %d, x/sys has %d", c.name, c.got, c.want)
		}
	}
}
