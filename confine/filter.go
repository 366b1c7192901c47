package confine

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
)

// Constants of the seccomp ABI (linux/seccomp.h, linux/audit.h), spelled out
// here so that the filter is the same whatever GOOS/GOARCH builds it.
const (
	seccompRetKillProcess = 0x80000000
	seccompRetErrno       = 0x00050000
	seccompRetAllow       = 0x7fff0000

	auditArchX86_64  = 0xc000003e
	auditArchAARCH64 = 0xc00000b7
	x32SyscallBit    = 0x40000000

	errnoEPERM  = 1
	errnoENOSYS = 38

	// struct seccomp_data offsets. Arguments are 64-bit; the filter reads
	// the low 32 bits of an argument at argLow(i) (both architectures
	// are little-endian), which is all the kernel looks at for these
	// int and clone-flag arguments.
	offNr   = 0
	offArch = 4
)

func argLow(i uint32) uint32 { return 16 + 8*i }

// Values the filter compares arguments with.
const (
	afNetlink   = 16
	afPacket    = 17
	afBluetooth = 31
	afVsock     = 40

	netlinkRoute = 0

	seccompSetModeFilter = 1
	prSetSeccomp         = 22

	// Every CLONE_NEW* flag valid in clone(2): NEWNS, NEWCGROUP, NEWUTS,
	// NEWIPC, NEWUSER, NEWPID, NEWNET. CLONE_NEWTIME (0x80) overlaps the
	// exit-signal byte of clone(2) and is only valid for unshare and clone3.
	cloneNewMask   = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
	unshareNewMask = cloneNewMask | 0x00000080
)

// syscallTable numbers the system calls the filter names, per architecture.
type syscallTable struct {
	name                           string
	arch                           uint32
	x32                            bool // reject the x32 ABI (syscall numbers with bit 30 set)
	socket, clone, clone3, unshare uint32
	seccomp, prctl                 uint32
	execve, execveat               uint32   // for NoExecFilter
	denied                         []uint32 // always EPERM, in deniedNames order
}

// deniedNames lists, in table order, the system calls denied outright.
var deniedNames = []string{
	"ptrace", "bpf", "process_vm_readv", "process_vm_writev",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"mount", "umount2", "pivot_root",
	"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "open_tree_attr",
	"setns", "kexec_load", "kexec_file_load", "keyctl", "add_key", "request_key",
}

var (
	tableX86_64 = syscallTable{
		name: "x86_64", arch: auditArchX86_64, x32: true,
		socket: 41, clone: 56, clone3: 435, unshare: 272, seccomp: 317, prctl: 157,
		execve: 59, execveat: 322,
		denied: []uint32{
			101, 321, 310, 311,
			425, 426, 427,
			165, 166, 155,
			430, 431, 432, 433, 429, 428, 442, 467,
			308, 246, 320, 250, 248, 249,
		},
	}
	tableAARCH64 = syscallTable{
		name: "aarch64", arch: auditArchAARCH64,
		socket: 198, clone: 220, clone3: 435, unshare: 97, seccomp: 277, prctl: 167,
		execve: 221, execveat: 281,
		denied: []uint32{
			117, 280, 270, 271,
			425, 426, 427,
			40, 39, 41,
			430, 431, 432, 433, 429, 428, 442, 467,
			268, 104, 294, 219, 217, 218,
		},
	}
)

// MoatFilter returns moat's own seccomp program, loaded after the
// container's. It covers x86_64 and aarch64 in one program and kills a
// process that makes a system call through any other ABI (i386, x32, arm32),
// whose numbers it does not check. It returns:
//   - EPERM for socket(2) of AF_PACKET, AF_BLUETOOTH, AF_VSOCK, and
//     AF_NETLINK with any protocol but NETLINK_ROUTE;
//   - EPERM for ptrace, bpf, process_vm_readv/writev, io_uring_*, mount,
//     umount2, pivot_root, the new mount API, setns, kexec_*, keyctl,
//     add_key, request_key;
//   - EPERM for unshare and clone with a CLONE_NEW* flag;
//   - EPERM for seccomp(SECCOMP_SET_MODE_FILTER) and prctl(PR_SET_SECCOMP);
//   - ENOSYS for clone3, whose flags live in memory a filter cannot read,
//     so that libc falls back to clone;
//
// and allows everything else (memfd_create on purpose: CUDA needs it).
func MoatFilter() (SeccompProgram, error) {
	insns, err := moatFilterInstructions()
	if err != nil {
		return SeccompProgram{}, err
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return SeccompProgram{}, fmt.Errorf("assemble moat seccomp filter: %w", err)
	}
	return SeccompProgram{Name: "moat", Instructions: encodeBPF(raw)}, nil
}

// perArch emits the architecture dispatch every moat filter starts with:
// an unknown architecture kills the process; each known one gets a label
// named after its table, the system call number loaded, then what body
// emits for it.
func (a *asm) perArch(body func(t syscallTable)) {
	a.load(offArch)
	a.jeq(auditArchX86_64, "x86_64")
	a.jeq(auditArchAARCH64, "aarch64")
	a.ret(seccompRetKillProcess)
	for _, t := range []syscallTable{tableX86_64, tableAARCH64} {
		a.label(t.name)
		a.load(offNr)
		body(t)
	}
}

func moatFilterInstructions() ([]bpf.Instruction, error) {
	p := &asm{}
	p.perArch(func(t syscallTable) {
		if t.x32 {
			p.jge(x32SyscallBit, "kill")
		}
		p.jeq(t.socket, "socket")
		p.jeq(t.clone, "clone")
		p.jeq(t.unshare, "unshare")
		p.jeq(t.seccomp, "seccomp")
		p.jeq(t.prctl, "prctl")
		p.jeq(t.clone3, "enosys")
		for _, nr := range t.denied {
			p.jeq(nr, "eperm")
		}
		p.ret(seccompRetAllow)
	})

	p.label("socket")
	p.load(argLow(0))
	p.jeq(afPacket, "eperm")
	p.jeq(afBluetooth, "eperm")
	p.jeq(afVsock, "eperm")
	p.jeq(afNetlink, "netlink")
	p.ret(seccompRetAllow)
	p.label("netlink")
	p.load(argLow(2))
	p.jeq(netlinkRoute, "allow")
	p.ret(seccompRetErrno | errnoEPERM)

	p.label("clone")
	p.load(argLow(0))
	p.jset(cloneNewMask, "eperm")
	p.ret(seccompRetAllow)

	p.label("unshare")
	p.load(argLow(0))
	p.jset(unshareNewMask, "eperm")
	p.ret(seccompRetAllow)

	p.label("seccomp")
	p.load(argLow(0))
	p.jeq(seccompSetModeFilter, "eperm")
	p.ret(seccompRetAllow)

	p.label("prctl")
	p.load(argLow(0))
	p.jeq(prSetSeccomp, "eperm")
	p.ret(seccompRetAllow)

	p.label("allow")
	p.ret(seccompRetAllow)
	p.label("eperm")
	p.ret(seccompRetErrno | errnoEPERM)
	p.label("enosys")
	p.ret(seccompRetErrno | errnoENOSYS)
	p.label("kill")
	p.ret(seccompRetKillProcess)
	return p.resolve()
}

// asm is a tiny assembler with forward jumps to labels; resolve turns them
// into the relative skips classic BPF wants.
type asm struct {
	insns  []bpf.Instruction
	labels map[string]int
	jumps  []pendingJump
}

type pendingJump struct {
	at    int
	label string
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = make(map[string]int)
	}
	a.labels[name] = len(a.insns)
}

func (a *asm) load(off uint32) {
	a.insns = append(a.insns, bpf.LoadAbsolute{Off: off, Size: 4})
}

func (a *asm) ret(v uint32) { a.insns = append(a.insns, bpf.RetConstant{Val: v}) }

func (a *asm) jump(cond bpf.JumpTest, v uint32, label string) {
	a.jumps = append(a.jumps, pendingJump{at: len(a.insns), label: label})
	a.insns = append(a.insns, bpf.JumpIf{Cond: cond, Val: v})
}

func (a *asm) jeq(v uint32, label string)  { a.jump(bpf.JumpEqual, v, label) }
func (a *asm) jge(v uint32, label string)  { a.jump(bpf.JumpGreaterOrEqual, v, label) }
func (a *asm) jset(v uint32, label string) { a.jump(bpf.JumpBitsSet, v, label) }

func (a *asm) resolve() ([]bpf.Instruction, error) {
	for _, j := range a.jumps {
		target, ok := a.labels[j.label]
		if !ok {
			return nil, fmt.Errorf("seccomp filter: undefined label %q", j.label)
		}
		skip := target - j.at - 1
		if skip < 0 || skip > 255 {
			return nil, fmt.Errorf("seccomp filter: jump to %q spans %d instructions", j.label, skip)
		}
		in := a.insns[j.at].(bpf.JumpIf)
		in.SkipTrue = uint8(skip)
		a.insns[j.at] = in
	}
	return a.insns, nil
}

// encodeBPF lays raw instructions out as struct sock_filter in little-endian
// order (x86_64 and aarch64).
func encodeBPF(raw []bpf.RawInstruction) []byte {
	out := make([]byte, 0, 8*len(raw))
	for _, in := range raw {
		out = binary.LittleEndian.AppendUint16(out, in.Op)
		out = append(out, in.Jt, in.Jf)
		out = binary.LittleEndian.AppendUint32(out, in.K)
	}
	return out
}

// DecodeBPF is the inverse of the encoding in SeccompProgram.Instructions.
func DecodeBPF(b []byte) ([]bpf.RawInstruction, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("seccomp program of %d bytes is not a whole number of instructions", len(b))
	}
	raw := make([]bpf.RawInstruction, len(b)/8)
	for i := range raw {
		o := b[8*i:]
		raw[i] = bpf.RawInstruction{
			Op: binary.LittleEndian.Uint16(o),
			Jt: o[2], Jf: o[3],
			K: binary.LittleEndian.Uint32(o[4:]),
		}
	}
	return raw, nil
}
