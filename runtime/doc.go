// Package runtime is moat's OCI runtime: the container commands of the
// runc command line (create, start, run, exec, state, list, ps, kill,
// delete, pause, resume, events, update, features, spec) and the
// `moat init` entry point, implemented as a client of libcontainer's
// public API and run in process.
//
// It is the only moat package that imports libcontainer. What engines see
// follows runc's command-line contract, because Docker, containerd's runc
// shim and other runc users drive moat exactly as they drive runc: the
// same command and flag names, exit statuses (the container's own status
// for run and exec, 255 for a failed exec), state JSON fields, events
// JSON (runc's exported types package) and the error texts engines match
// on, such as "container does not exist" and "container not running",
// which come from libcontainer unchanged.
//
// The pieces:
//
//   - create_linux.go turns a bundle into a libcontainer container;
//   - launch_linux.go starts one process in it (the container's first
//     process, or an exec'd one) and, when moat stays attached, supervises
//     it with supervise_linux.go (signals, reaping) and stdio_linux.go and
//     console_linux.go (pipes, pseudo-terminals);
//   - the other files each implement one command or a small group.
//
// With the admin configuration's `sandbox: off` the bundle's spec reaches
// libcontainer as runc would pass it. With the sandbox on, create and run
// first hand the spec to prepareSandbox, the single seam through which
// the spec rewrite and moat-init confinement are wired in.
package runtime
