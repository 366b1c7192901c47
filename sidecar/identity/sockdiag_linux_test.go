package identity

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// sockInode is the inode of a socket of this process.
func sockInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	return st.Ino
}

// ownSockDiag is a sock_diag socket in this process's own netns (no root
// needed), closed by the test's cleanup.
func ownSockDiag(t *testing.T) *sockDiag {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Skipf("no sock_diag: %v", err)
	}
	d, err := sockDiagOn(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close() })
	return d
}

// TestSockDiagExactTuple queries this process's own netns (no root
// needed) over IPv4 and IPv6 loopback.
func TestSockDiagExactTuple(t *testing.T) {
	d := ownSockDiag(t)
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, _ := ln.Accept()
				accepted <- c
			}()
			c, err := net.Dial(tc.network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := <-accepted
			defer s.Close()
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()

			cIno, sIno := sockInode(t, c.(*net.TCPConn)), sockInode(t, s.(*net.TCPConn))
			if ino, err := d.inode(unix.IPPROTO_TCP, local, remote); err != nil || ino != cIno {
				t.Errorf("client socket: inode %d, %v; want %d", ino, err, cIno)
			}
			if ino, err := d.inode(unix.IPPROTO_TCP, remote, local); err != nil || ino != sIno {
				t.Errorf("server side: inode %d, %v; want %d", ino, err, sIno)
			}
			gone := netip.AddrPortFrom(local.Addr(), local.Port()+1)
			if _, err := d.inode(unix.IPPROTO_TCP, gone, remote); !errors.Is(err, ErrNotFound) {
				t.Errorf("no such socket: %v, want ErrNotFound", err)
			}
		})
	}
	mixed := netip.MustParseAddrPort("[::1]:80")
	if _, err := d.inode(unix.IPPROTO_TCP, netip.MustParseAddrPort("127.0.0.1:1"), mixed); err == nil {
		t.Error("mixed families accepted")
	}
}

// TestSockDiagUDP finds connected and unconnected UDP sockets by the
// addresses of a datagram they sent.
func TestSockDiagUDP(t *testing.T) {
	d := ownSockDiag(t)
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	to := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	connected, err := net.DialUDP("udp4", nil, peer.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer connected.Close()
	unconnected, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer unconnected.Close()
	for name, c := range map[string]*net.UDPConn{"connected": connected, "unconnected": unconnected} {
		from := c.LocalAddr().(*net.UDPAddr).AddrPort()
		want := sockInode(t, c)
		if ino, err := d.inode(unix.IPPROTO_UDP, from, to); err != nil || ino != want {
			t.Errorf("%s: inode %d, %v; want %d", name, ino, err, want)
		}
		if _, err := d.inode(unix.IPPROTO_TCP, from, to); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s as TCP: %v, want ErrNotFound", name, err)
		}
	}
}
