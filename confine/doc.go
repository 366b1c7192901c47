// Package confine is what moat-init does inside the container, as a library
// (SSH sessions reuse it): join the sandbox's network namespace, apply the
// Landlock plan, load the seccomp programs, drop to the planned user and
// capabilities, then exec the program or run it as a reaping init.
//
// Everything is decided at `moat create` time and written as a Plan (plan.go,
// JSON, versioned). The create-time helpers live here too: MoatFilter (moat's
// own seccomp program, pure Go classic BPF) and ResolveUser (the container's
// /etc/passwd and /etc/group, read without leaving its rootfs). The
// container's own seccomp profile is compiled by the cgo package
// confine/seccompbpf, which only the moat binary imports; moat-init stays
// static and CGO_ENABLED=0.
//
// Integration, in the runtime's create path:
//
//	id, err := confine.ResolveUser(rootfs, runAsUser, runAsGroup, spec.Process.User)
//	prog, err := seccompbpf.Compile(spec.Linux.Seccomp) // when the spec has one
//	ll, findings, err := policy.LandlockPlan(pol, spec, policy.PlanOptions{})
//	newSpec, plan, err := hooks.Rewrite(spec, hooks.RewriteInput{...})
//	err = confine.WritePlan(planHostPath, plan)
//
// and moat-init (cmd/moat-init) calls confine.Run(plan, argv, Options{}).
package confine
