//go:build linux && amd64

package confine

// nativeTable is the syscall table TestSyscallTable checks against x/sys.
var nativeTable = tableX86_64
