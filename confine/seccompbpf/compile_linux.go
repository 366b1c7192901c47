//go:build cgo

package seccompbpf

import (
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/moatsandbox/moat/confine"
)

// Compile turns an OCI seccomp profile into the container's program for the
// plan (confine.SeccompProgram named "container").
func Compile(profile *specs.LinuxSeccomp) (*confine.SeccompProgram, error) {
	if profile == nil {
		return nil, errors.New("compile seccomp profile: no profile")
	}
	if err := checkNotify(profile); err != nil {
		return nil, err
	}
	flags, err := programFlags(profile.Flags)
	if err != nil {
		return nil, err
	}
	def, err := action(profile.DefaultAction, profile.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("seccomp defaultAction: %w", err)
	}
	filter, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("create seccomp filter: %w", err)
	}
	defer filter.Release()
	if err := filter.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	for _, a := range profile.Architectures {
		arch, err := libseccomp.GetArchFromString(archName(a))
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", a, err)
		}
		if err := filter.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp architecture %s: %w", a, err)
		}
	}
	for i, sc := range profile.Syscalls {
		if err := addRules(filter, sc, def); err != nil {
			return nil, fmt.Errorf("seccomp syscalls[%d]: %w", i, err)
		}
	}
	insns, err := export(filter)
	if err != nil {
		return nil, err
	}
	return &confine.SeccompProgram{Name: "container", Flags: flags, Instructions: insns}, nil
}

// libraryVersion is libseccomp's version, part of a cached program's key.
func libraryVersion() string {
	major, minor, micro := libseccomp.GetLibraryVersion()
	return fmt.Sprintf("libseccomp %d.%d.%d", major, minor, micro)
}

func addRules(filter *libseccomp.ScmpFilter, sc specs.LinuxSyscall, def libseccomp.ScmpAction) error {
	act, err := action(sc.Action, sc.ErrnoRet)
	if err != nil {
		return err
	}
	if act == def {
		return nil // redundant; libseccomp refuses it
	}
	var conds []libseccomp.ScmpCondition
	perArg := map[uint]int{}
	for _, a := range sc.Args {
		op, err := operator(a.Op)
		if err != nil {
			return err
		}
		c, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		if err != nil {
			return fmt.Errorf("condition on argument %d: %w", a.Index, err)
		}
		conds = append(conds, c)
		perArg[a.Index]++
	}
	split := false
	for _, n := range perArg {
		split = split || n > 1
	}
	for _, name := range sc.Names {
		nr, err := libseccomp.GetSyscallFromName(name)
		if err != nil {
			continue // unknown to libseccomp: not on this kernel/arch (as runc)
		}
		switch {
		case len(conds) == 0:
			err = filter.AddRule(nr, act)
		case split:
			for _, c := range conds {
				if err = filter.AddRuleConditional(nr, act, []libseccomp.ScmpCondition{c}); err != nil {
					break
				}
			}
		default:
			err = filter.AddRuleConditional(nr, act, conds)
		}
		if err != nil {
			return fmt.Errorf("rule for %s: %w", name, err)
		}
	}
	return nil
}

// export writes the program to a memfd (libseccomp 2.5 can only export to
// an fd) and reads it back.
func export(filter *libseccomp.ScmpFilter) ([]byte, error) {
	fd, err := unix.MemfdCreate("moat-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	f := os.NewFile(uintptr(fd), "moat-seccomp")
	defer f.Close()
	if err := filter.ExportBPF(f); err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("export seccomp filter: %w", err)
	}
	if len(data) == 0 || len(data)%8 != 0 || len(data)/8 > 4096 {
		return nil, fmt.Errorf("export seccomp filter: %d bytes is not a loadable program", len(data))
	}
	return data, nil
}

func action(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(errnoOr(errnoRet)), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(errnoOr(errnoRet)), nil
	case specs.ActNotify:
		return libseccomp.ActInvalid, ErrNotify
	}
	return libseccomp.ActInvalid, fmt.Errorf("unknown seccomp action %q", a)
}

func errnoOr(errnoRet *uint) int16 {
	if errnoRet != nil {
		return int16(*errnoRet)
	}
	return int16(unix.EPERM)
}

func operator(op specs.LinuxSeccompOperator) (libseccomp.ScmpCompareOp, error) {
	switch op {
	case specs.OpNotEqual:
		return libseccomp.CompareNotEqual, nil
	case specs.OpLessThan:
		return libseccomp.CompareLess, nil
	case specs.OpLessEqual:
		return libseccomp.CompareLessOrEqual, nil
	case specs.OpEqualTo:
		return libseccomp.CompareEqual, nil
	case specs.OpGreaterEqual:
		return libseccomp.CompareGreaterEqual, nil
	case specs.OpGreaterThan:
		return libseccomp.CompareGreater, nil
	case specs.OpMaskedEqual:
		return libseccomp.CompareMaskedEqual, nil
	}
	return libseccomp.CompareInvalid, fmt.Errorf("unknown seccomp operator %q", op)
}
