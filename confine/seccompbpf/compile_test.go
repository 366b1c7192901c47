//go:build cgo && linux

package seccompbpf

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/confine"
)

func uintp(v uint) *uint { return &v }

// testProfile: deny by default with EPERM; allow read and write; mkdir and
// mkdirat fail with ENOTSUP; personality only with argument 0; kill the
// process on reboot.
func testProfile() *specs.LinuxSeccomp {
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Flags:         []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagSpecAllow},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "write", "no_such_syscall"}, Action: specs.ActAllow},
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: uintp(uint(unix.ENOTSUP))},
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0, Op: specs.OpEqualTo}}},
			{Names: []string{"reboot"}, Action: specs.ActKillProcess},
		},
	}
}

// run evaluates the program on a seccomp_data for the x86_64 ABI (see
// confine's filter tests for the byte order).
func run(t *testing.T, prog *confine.SeccompProgram, nr uint32, args ...uint64) uint32 {
	t.Helper()
	raw, err := confine.DecodeBPF(prog.Instructions)
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("libseccomp emitted an instruction the VM does not know")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], 0xc000003e)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	v, err := vm.Run(b)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v)
}

func TestCompile(t *testing.T) {
	if testing.Short() || unix.SYS_READ != 0 { // the numbers below are x86_64's
		t.Skip("x86_64 only")
	}
	prog, err := Compile(testProfile())
	if err != nil {
		t.Fatal(err)
	}
	if prog.Name != "container" || prog.Flags != 0x4 {
		t.Errorf("program %q flags %#x", prog.Name, prog.Flags)
	}
	const (
		allow = 0x7fff0000
		errno = 0x00050000
		kill  = 0x80000000
	)
	for _, c := range []struct {
		name string
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", unix.SYS_READ, nil, allow},
		{"write", unix.SYS_WRITE, nil, allow},
		{"getpid (default)", unix.SYS_GETPID, nil, errno | uint32(unix.EPERM)},
		{"mkdir", unix.SYS_MKDIR, nil, errno | uint32(unix.ENOTSUP)},
		{"mkdirat", unix.SYS_MKDIRAT, nil, errno | uint32(unix.ENOTSUP)},
		{"personality(0)", unix.SYS_PERSONALITY, []uint64{0}, allow},
		{"personality(8)", unix.SYS_PERSONALITY, []uint64{8}, errno | uint32(unix.EPERM)},
		{"reboot", unix.SYS_REBOOT, nil, kill},
	} {
		if got := run(t, prog, c.nr, c.args...); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestCompileRefusals(t *testing.T) {
	notify := testProfile()
	notify.Syscalls = append(notify.Syscalls, specs.LinuxSyscall{Names: []string{"mount"}, Action: specs.ActNotify})
	listener := testProfile()
	listener.ListenerPath = "/run/seccomp-agent.sock"
	for name, p := range map[string]*specs.LinuxSeccomp{"notify action": notify, "listener path": listener} {
		if _, err := Compile(p); !errors.Is(err, ErrNotify) {
			t.Errorf("%s: got %v, want ErrNotify", name, err)
		}
	}
	bad := testProfile()
	bad.Syscalls[0].Action = "SCMP_ACT_DANCE"
	if _, err := Compile(bad); err == nil {
		t.Error("unknown action accepted")
	}
	badFlag := testProfile()
	badFlag.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_FOO"}
	if _, err := Compile(badFlag); err == nil {
		t.Error("unknown flag accepted")
	}
}

// TestCache: a profile is compiled once per cache directory; an entry is
// the program Compile makes; a broken entry is compiled again and
// replaced; another profile gets an entry of its own; a notify profile is
// refused whatever the directory holds.
func TestCache(t *testing.T) {
	dir := t.TempDir()
	c := Cache{Dir: dir}
	want, err := Compile(testProfile())
	if err != nil {
		t.Fatal(err)
	}
	entries := func() []string {
		names, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		return names
	}
	for range 2 {
		got, err := c.Compile(testProfile())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("cached program %+v, want %+v", got, want)
		}
	}
	files := entries()
	if len(files) != 1 {
		t.Fatalf("cache entries %v, want one", files)
	}
	// A cached program is what a later create gets, so a bad entry must
	// not be: here half an instruction, then a program of another name.
	for _, bad := range []string{`{"name":"container","instructions":"AAAA"}`, `{"name":"moat","instructions":"AAAAAAAAAAA="}`, `not json`} {
		if err := os.WriteFile(files[0], []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := c.Compile(testProfile())
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("with entry %s: %+v, %v; want the compiled program", bad, got, err)
		}
		if p, ok := readCached(files[0]); !ok || !reflect.DeepEqual(p, want) {
			t.Errorf("entry %s was not replaced", bad)
		}
	}
	other := testProfile()
	other.DefaultAction = specs.ActKillProcess
	if _, err := c.Compile(other); err != nil {
		t.Fatal(err)
	}
	if len(entries()) != 2 {
		t.Errorf("cache entries %v, want two", entries())
	}
	notify := testProfile()
	notify.Syscalls[0].Action = specs.ActNotify
	if _, err := c.Compile(notify); !errors.Is(err, ErrNotify) {
		t.Errorf("notify profile: %v, want ErrNotify", err)
	}
}
