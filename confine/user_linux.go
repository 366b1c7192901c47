package confine

import (
	"errors"
	"fmt"
	"io"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ResolveUser resolves the identity a container's program runs as, at create
// time, from the container's own /etc/passwd and /etc/group under rootfs.
// user and group are the policy's process.run_as_user and run_as_group ("" if
// unset); specUser is the spec's process.user. See userDB.resolve for the
// rules. The files are opened with openat2(RESOLVE_IN_ROOT), so a symlink in
// the image cannot make moat read a host file. A missing file counts as
// empty.
func ResolveUser(rootfs, user, group string, specUser specs.User) (Identity, error) {
	root, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Identity{}, fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(root)
	var db userDB
	passwd, err := readInRoot(root, "etc/passwd")
	if err != nil {
		return Identity{}, err
	}
	db.passwd = parsePasswd(passwd)
	groups, err := readInRoot(root, "etc/group")
	if err != nil {
		return Identity{}, err
	}
	db.group = parseGroup(groups)
	return db.resolve(user, group, specUser)
}

// maxUserFile bounds what is read of /etc/passwd and /etc/group.
const maxUserFile = 16 << 20

// readInRoot reads a regular file under the root fd without leaving it.
func readInRoot(root int, name string) ([]byte, error) {
	fd, err := unix.Openat2(root, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open the container's /%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat the container's /%s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("the container's /%s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxUserFile+1))
	if err != nil {
		return nil, fmt.Errorf("read the container's /%s: %w", name, err)
	}
	if len(data) > maxUserFile {
		return nil, fmt.Errorf("the container's /%s is larger than %d bytes", name, maxUserFile)
	}
	return data, nil
}
