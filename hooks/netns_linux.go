package hooks

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/moatsandbox/moat/internal/nsthread"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// threadNetNS is the calling thread's network namespace as procfs shows it.
const threadNetNS = "/proc/thread-self/ns/net"

// nsConn holds netlink sockets bound to one network namespace. A socket
// belongs to the namespace it was created in, so once made on a thread
// switched into that namespace it works from any goroutine.
type nsConn struct {
	rt  *netlink.Handle // rtnetlink: links, addresses, routes
	nft *nftables.Conn  // nfnetlink: nftables
}

// dialHere opens an nsConn in the calling thread's network namespace.
func dialHere() (*nsConn, error) {
	rt, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	nft, err := nftables.New(nftables.AsLasting())
	if err != nil {
		rt.Close()
		return nil, fmt.Errorf("open nftables socket: %w", err)
	}
	return &nsConn{rt: rt, nft: nft}, nil
}

// Close closes both sockets.
func (c *nsConn) Close() {
	c.rt.Close()
	_ = c.nft.CloseLasting()
}

// inNetNS runs fn on a thread switched into the network namespace ns
// (internal/nsthread), or simply on a locked thread when that thread is
// already in ns.
func inNetNS(ns *os.File, fn func() error) error {
	return nsthread.Run(func(orig int) error {
		if same, err := sameInode(orig, int(ns.Fd())); err == nil && same {
			return nil
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", ns.Name(), err)
		}
		return nil
	}, fn)
}

// dialNetNS opens an nsConn in the network namespace ns.
func dialNetNS(ns *os.File) (*nsConn, error) {
	var c *nsConn
	err := inNetNS(ns, func() (err error) {
		c, err = dialHere()
		return err
	})
	return c, err
}

// createNetNS makes a new network namespace, pins it at path (a new file,
// bind-mounted over with the namespace) and returns sockets bound to it,
// with the namespace's nsfs inode. IPv6 is off by default for the
// namespace's future interfaces; loopback keeps ::1. On error nothing is
// left at path.
func createNetNS(path string) (_ *nsConn, _ uint64, retErr error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return nil, 0, fmt.Errorf("create network namespace pin: %w", err)
	}
	_ = f.Close()
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, unpinNetNS(path))
		}
	}()
	var c *nsConn
	err = nsthread.Run(func(int) error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		return nil
	}, func() error {
		if err := unix.Mount(threadNetNS, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		if err := writeSysctl("net/ipv6/conf/default/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		var err error
		c, err = dialHere()
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, 0, err
	}
	ino, err := NetNSInode(path)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	return c, ino, nil
}

// writeSysctl writes a /proc/sys file; net/ entries are those of the
// calling thread's network namespace.
func writeSysctl(name, value string) error {
	f, err := os.OpenFile("/proc/sys/"+name, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", name, err)
	}
	return nil
}

// pinNetNS bind-mounts the namespace ns onto path (a new file).
func pinNetNS(ns *os.File, path string) (retErr error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return fmt.Errorf("create network namespace pin: %w", err)
	}
	_ = f.Close()
	src := fmt.Sprintf("/proc/self/fd/%d", ns.Fd())
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		return errors.Join(fmt.Errorf("pin network namespace at %s: %w", path, err), unpinNetNS(path))
	}
	return nil
}

// unpinNetNS unmounts every namespace mounted at path and removes the file.
// A missing path is fine; the namespace itself lives on while a process or
// an open file descriptor still holds it.
func unpinNetNS(path string) error {
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		if err != nil {
			return fmt.Errorf("unmount network namespace %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace pin: %w", err)
	}
	return nil
}

// NetNSInode is the nsfs inode of the namespace at path, which identifies
// the namespace.
func NetNSInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return st.Ino, nil
}

// sameInode reports whether the files open at a and b are the same inode.
func sameInode(a, b int) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Fstat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// openNetNS opens the network namespace at path, or the calling thread's
// when path is "", and checks that it is one.
func openNetNS(path string) (*os.File, error) {
	if path == "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		path = threadNetNS
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		_ = f.Close()
		return nil, fmt.Errorf("%s is not a namespace", path)
	}
	return f, nil
}

// NewNetNS creates a network namespace with its loopback up, pinned at path
// (a file that must not exist yet), the way an engine's fresh network
// namespace starts. RemoveNetNS undoes it.
func NewNetNS(path string) error {
	c, _, err := createNetNS(path)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := loopbackUp(c); err != nil {
		return errors.Join(err, unpinNetNS(path))
	}
	return nil
}

// RemoveNetNS unpins the network namespace at path (NewNetNS's undo).
// Idempotent.
func RemoveNetNS(path string) error { return unpinNetNS(path) }

// ApplyNetSysctls writes the spec's net.* sysctls (linux.sysctl) in the
// network namespace pinned at path too. libcontainer applies them in the
// container's own (outer) netns; the agent lives in the inner one and
// expects them there (Docker sets net.ipv4.ip_unprivileged_port_start=0
// so an unprivileged server can bind port 80). Keys are OCI's dotted form.
func ApplyNetSysctls(path string, sysctls map[string]string) error {
	var names []string
	for k := range sysctls {
		if strings.HasPrefix(k, "net.") {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	ns, err := openNetNS(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetNS(ns, func() error {
		var errs []error
		for _, k := range names {
			if strings.Contains(k, "..") || strings.Contains(k, "/") {
				errs = append(errs, fmt.Errorf("sysctl %q: invalid name", k))
				continue
			}
			if err := writeSysctl(strings.ReplaceAll(k, ".", "/"), sysctls[k]); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}
