// Package seccompbpf compiles a container's OCI seccomp profile
// (spec.linux.seccomp) to a classic BPF program at `moat create` time, with
// libseccomp, so that moat-init (static, CGO_ENABLED=0) only has to load it.
// It needs cgo and libseccomp (`apt-get install -y libseccomp-dev`); only
// the moat binary imports it. Without cgo, Compile returns ErrNoLibseccomp.
//
// The translation follows runc's libcontainer/seccomp: the default action
// and its errno, the profile's extra architectures, every syscall name with
// its action, errno and argument conditions (conditions on the same argument
// become separate rules, as libseccomp cannot AND them), names libseccomp
// does not know skipped. Profiles that need a notify listener are refused.
// Unlike runc, the program is not patched to answer ENOSYS for system calls
// newer than the profile.
package seccompbpf

import "errors"

// ErrNoLibseccomp is returned by Compile in a binary built without cgo.
var ErrNoLibseccomp = errors.New("seccomp profiles need moat built with cgo and libseccomp")

// ErrNotify is returned for a profile that uses SCMP_ACT_NOTIFY or a
// listenerPath: moat-init loads the filter itself and cannot pass the
// listener fd to a seccomp agent.
var ErrNotify = errors.New("seccomp notify (SCMP_ACT_NOTIFY, listenerPath) is not supported by moat: moat-init loads the filter itself and cannot pass the listener fd to a seccomp agent")
