package confine

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"
)

// seccompData builds a struct seccomp_data as classic BPF sees it. The
// x/net/bpf VM loads words big-endian, the kernel in host order; the filter
// only loads aligned 32-bit words, so writing each word big-endian at its
// host-order offset gives the VM exactly what the kernel would.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], arch)
	for i, a := range args {
		off := 16 + 8*i
		binary.BigEndian.PutUint32(b[off:], uint32(a))       // low word first (little-endian host)
		binary.BigEndian.PutUint32(b[off+4:], uint32(a>>32)) // then the high word
	}
	return b
}

func runFilter(t *testing.T, vm *bpf.VM, data []byte) uint32 {
	t.Helper()
	v, err := vm.Run(data)
	if err != nil {
		t.Fatalf("run filter: %v", err)
	}
	return uint32(v)
}

func newFilterVM(t *testing.T) *bpf.VM {
	t.Helper()
	prog, err := MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeBPF(prog.Instructions)
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter has instructions the VM cannot run")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("filter rejected by the BPF VM: %v", err)
	}
	return vm
}

const (
	retEPERM  = seccompRetErrno | errnoEPERM
	retENOSYS = seccompRetErrno | errnoENOSYS
	retAllow  = seccompRetAllow
	retKill   = seccompRetKillProcess
)

func TestMoatFilterDecisions(t *testing.T) {
	vm := newFilterVM(t)
	type tc struct {
		name string
		nr   uint32
		args []uint64
		want uint32
	}
	for _, tab := range []struct {
		t                     syscallTable
		read, memfd, openat   uint32
		cloneThreadFlagsExtra uint64
	}{
		{t: tableX86_64, read: 0, memfd: 319, openat: 257},
		{t: tableAARCH64, read: 63, memfd: 279, openat: 56},
	} {
		st := tab.t
		const threadFlags = 0x00010000 | 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 | 0x00040000 | 0x00080000 | 0x00100000 | 0x00200000
		cases := []tc{
			{"read", tab.read, nil, retAllow},
			{"openat", tab.openat, nil, retAllow},
			{"memfd_create stays allowed", tab.memfd, []uint64{0, 0}, retAllow},
			{"socket AF_INET", st.socket, []uint64{2, 1, 0}, retAllow},
			{"socket AF_INET6", st.socket, []uint64{10, 1, 0}, retAllow},
			{"socket AF_UNIX", st.socket, []uint64{1, 1, 0}, retAllow},
			{"socket AF_PACKET", st.socket, []uint64{afPacket, 3, 0x300}, retEPERM},
			{"socket AF_BLUETOOTH", st.socket, []uint64{afBluetooth, 1, 0}, retEPERM},
			{"socket AF_VSOCK", st.socket, []uint64{afVsock, 1, 0}, retEPERM},
			{"socket AF_NETLINK route", st.socket, []uint64{afNetlink, 3, 0}, retAllow},
			{"socket AF_NETLINK audit", st.socket, []uint64{afNetlink, 3, 9}, retEPERM},
			{"socket AF_NETLINK sock_diag", st.socket, []uint64{afNetlink, 3, 4}, retEPERM},
			{"socket AF_NETLINK route with high bits", st.socket, []uint64{afNetlink | 1<<40, 3, 0}, retAllow},
			{"socket AF_PACKET with high bits", st.socket, []uint64{afPacket | 1<<40, 3, 0}, retEPERM},
			{"clone thread", st.clone, []uint64{threadFlags}, retAllow},
			{"clone fork", st.clone, []uint64{17}, retAllow},
			{"clone CLONE_NEWUSER", st.clone, []uint64{0x10000000 | 17}, retEPERM},
			{"clone CLONE_NEWNS", st.clone, []uint64{0x00020000}, retEPERM},
			{"clone CLONE_NEWNET", st.clone, []uint64{0x40000000}, retEPERM},
			{"clone CLONE_NEWCGROUP", st.clone, []uint64{0x02000000}, retEPERM},
			{"clone exit signal 0x80 is not NEWTIME", st.clone, []uint64{0x80}, retAllow},
			{"unshare CLONE_FILES", st.unshare, []uint64{0x400}, retAllow},
			{"unshare CLONE_NEWUSER", st.unshare, []uint64{0x10000000}, retEPERM},
			{"unshare CLONE_NEWPID", st.unshare, []uint64{0x20000000}, retEPERM},
			{"unshare CLONE_NEWIPC", st.unshare, []uint64{0x08000000}, retEPERM},
			{"unshare CLONE_NEWUTS", st.unshare, []uint64{0x04000000}, retEPERM},
			{"unshare CLONE_NEWTIME", st.unshare, []uint64{0x80}, retEPERM},
			{"clone3", st.clone3, []uint64{0, 88}, retENOSYS},
			{"seccomp SET_MODE_FILTER", st.seccomp, []uint64{1, 0, 0}, retEPERM},
			{"seccomp SET_MODE_STRICT", st.seccomp, []uint64{0, 0, 0}, retAllow},
			{"seccomp GET_ACTION_AVAIL", st.seccomp, []uint64{2, 0, 0}, retAllow},
			{"prctl PR_SET_SECCOMP", st.prctl, []uint64{prSetSeccomp, 2}, retEPERM},
			{"prctl PR_SET_NO_NEW_PRIVS", st.prctl, []uint64{38, 1}, retAllow},
			{"prctl PR_CAPBSET_DROP", st.prctl, []uint64{24, 21}, retAllow},
		}
		if len(st.denied) != len(deniedNames) {
			t.Fatalf("%s: %d denied numbers for %d names", st.name, len(st.denied), len(deniedNames))
		}
		for i, nr := range st.denied {
			cases = append(cases, tc{deniedNames[i], nr, nil, retEPERM})
		}
		for _, c := range cases {
			got := runFilter(t, vm, seccompData(st.arch, c.nr, c.args...))
			if got != c.want {
				t.Errorf("%s %s (nr %d): got %#x, want %#x", st.name, c.name, c.nr, got, c.want)
			}
		}
	}
}

func TestMoatFilterForeignABIsAreKilled(t *testing.T) {
	vm := newFilterVM(t)
	for _, c := range []struct {
		name     string
		arch, nr uint32
	}{
		{"i386", 0x40000003, 3},
		{"arm32", 0x40000028, 3},
		{"riscv64", 0xc00000f3, 63},
		{"x32 read", auditArchX86_64, x32SyscallBit | 0},
		{"x32 socket", auditArchX86_64, x32SyscallBit | 41},
	} {
		if got := runFilter(t, vm, seccompData(c.arch, c.nr)); got != retKill {
			t.Errorf("%s: got %#x, want kill-process", c.name, got)
		}
	}
	// aarch64 has no x32-style bit: a large number is simply allowed (the
	// kernel answers ENOSYS).
	if got := runFilter(t, vm, seccompData(auditArchAARCH64, x32SyscallBit|1)); got != retAllow {
		t.Errorf("aarch64 large nr: got %#x, want allow", got)
	}
}

func TestBPFRoundTrip(t *testing.T) {
	prog, err := MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeBPF(prog.Instructions)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeBPF(raw); string(got) != string(prog.Instructions) {
		t.Fatal("encode(decode(x)) != x")
	}
	if prog.Len() > 255 || prog.Len() < 10 {
		t.Fatalf("unexpected program length %d", prog.Len())
	}
	if _, err := DecodeBPF(make([]byte, 7)); err == nil {
		t.Fatal("DecodeBPF accepted 7 bytes")
	}
}

func TestNoExecFilter(t *testing.T) {
	p, err := NoExecFilter()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := DecodeBPF(p.Instructions)
	if err != nil {
		t.Fatal(err)
	}
	// arch check (4), per table a load, two checks and allow (8), eperm.
	if len(raw) != 13 || p.Name != "no-exec" {
		t.Errorf("%s: %d instructions", p.Name, len(raw))
	}
}
