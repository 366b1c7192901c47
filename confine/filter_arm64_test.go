//go:build linux && arm64

package confine

// nativeTable is the syscall table TestSyscallTable checks against x/sys.
var nativeTable = tableAARCH64
