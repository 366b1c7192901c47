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
	p.load(offArch)
	p.jeq(auditArchX86_64, "x86_64")
	p.jeq(auditArchAARCH64, "aarch64")
	p.ret(seccompRetKillProcess)
	for _, t := range []syscallTable{tableX86_64, tableAARCH64} {
		p.label(t.name)
		p.load(offNr)
		p.jeq(t.execve, "eperm")
		p.jeq(t.execveat, "eperm")
		p.ret(seccompRetAllow)
	}
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
