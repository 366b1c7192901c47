//go:build !linux

package confine

import specs "github.com/opencontainers/runtime-spec/specs-go"

// ResolveUser is only supported on Linux.
func ResolveUser(rootfs, user, group string, specUser specs.User) (Identity, error) {
	return Identity{}, ErrNotSupported
}
