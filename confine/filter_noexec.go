package confine

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// NoExecFilter is a seccomp program for moat's own long-running processes
// (the sidecar), loaded on top of MoatFilter by Harden: execve and
// execveat fail with EPERM. A process that can never exec has no use for
// its bounding set, which Harden then drops on one thread only.
func NoExecFilter() (SeccompProgram, error) {
	p := &asm{}
	p.perArch(func(t syscallTable) {
		p.jeq(t.execve, "eperm")
		p.jeq(t.execveat, "eperm")
		p.ret(seccompRetAllow)
	})
	p.label("eperm")
	p.ret(seccompRetErrno | errnoEPERM)
	insns, err := p.resolve()
	if err != nil {
		return SeccompProgram{}, err
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return SeccompProgram{}, fmt.Errorf("assemble no-exec seccomp filter: %w", err)
	}
	return SeccompProgram{Name: "no-exec", Instructions: encodeBPF(raw)}, nil
}
