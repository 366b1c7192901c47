package identity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/moatsandbox/moat/internal/nsthread"
	"golang.org/x/sys/unix"
)

const (
	nlmsgHdrLen    = 16 // struct nlmsghdr
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	inetDiagMsgLen = 72 // struct inet_diag_msg
	// diagTimeout bounds a query (the kernel answers in microseconds).
	diagTimeout = 2 * time.Second
)

// sockDiag asks the kernel, over a NETLINK_SOCK_DIAG socket created inside
// the sandbox's inner netns, for the one TCP socket with an exact
// four-tuple. Without NLM_F_DUMP the kernel looks the tuple up in its
// hash tables instead of walking every socket. Not safe for concurrent
// use.
type sockDiag struct {
	fd  int
	seq uint32
	req [nlmsgHdrLen + inetDiagReqLen]byte
	buf []byte
}

// newSockDiag creates the netlink socket in the netns open at nsFd.
func newSockDiag(nsFd int) (*sockDiag, error) {
	fd, err := nsthread.Socket(nsFd, func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	})
	if err != nil {
		return nil, fmt.Errorf("create sock_diag socket in the inner netns: %w", err)
	}
	return sockDiagOn(fd)
}

// sockDiagOn sets up a NETLINK_SOCK_DIAG socket (whose netns is where it
// was created), closing it on failure.
func sockDiagOn(fd int) (*sockDiag, error) {
	tv := unix.NsecToTimeval(diagTimeout.Nanoseconds())
	for _, opt := range []int{unix.SO_RCVTIMEO, unix.SO_SNDTIMEO} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("set sock_diag socket timeout: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sock_diag socket: %w", err)
	}
	return &sockDiag{fd: fd, buf: make([]byte, 8192)}, nil
}

func (d *sockDiag) close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// inode returns the inode of the socket of protocol proto (IPPROTO_TCP or
// IPPROTO_UDP) whose local address is client and whose peer is server, as
// seen inside the inner netns. A UDP socket matches by its local address
// alone when it is not connected: the kernel looks it up as it would for
// a datagram from server to client.
func (d *sockDiag) inode(proto uint8, client, server netip.AddrPort) (uint64, error) {
	c, s := client.Addr().Unmap(), server.Addr().Unmap()
	if !c.IsValid() || !s.IsValid() || c.Is4() != s.Is4() {
		return 0, fmt.Errorf("look up socket %v -> %v: addresses of different families", client, server)
	}
	d.seq++
	ne := binary.NativeEndian
	req := d.req[:]
	clear(req)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], d.seq)

	p := req[nlmsgHdrLen:]
	p[0] = unix.AF_INET
	if c.Is6() {
		p[0] = unix.AF_INET6
	}
	p[1] = proto
	ne.PutUint32(p[4:], ^uint32(0)) // every state
	id := p[8:]                     // struct inet_diag_sockid
	local, peer := client, server
	if proto == unix.IPPROTO_UDP {
		// The kernel looks a UDP socket up as the receiver of a datagram
		// from the sockid's source to its destination: swapped.
		local, peer = server, client
	}
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], peer.Port())
	copy(id[4:20], local.Addr().Unmap().AsSlice())
	copy(id[20:36], peer.Addr().Unmap().AsSlice())
	ne.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], ^uint32(0))

	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("send sock_diag query: %w", err)
	}
	for {
		n, from, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				err = fmt.Errorf("no answer within %v", diagTimeout)
			}
			return 0, fmt.Errorf("receive sock_diag answer: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // only the kernel answers
		}
		ino, done, err := d.parse(d.buf[:n], proto, client, server)
		if done {
			return ino, err
		}
	}
}

// parse looks for the answer to the current query among the messages of
// one datagram; done is false when none of them is.
func (d *sockDiag) parse(b []byte, proto uint8, client, server netip.AddrPort) (ino uint64, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, true, errors.New("malformed sock_diag answer")
		}
		typ, seq, msg := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[nlmsgHdrLen:l]
		if next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		if seq != d.seq {
			continue // a late answer to a query that timed out
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return 0, true, errors.New("malformed sock_diag error")
			}
			errno := unix.Errno(-int32(ne.Uint32(msg)))
			if errno == 0 {
				continue // an acknowledgement
			}
			if errno == unix.ENOENT {
				return 0, true, fmt.Errorf("%w: %v -> %v", ErrNotFound, client, server)
			}
			return 0, true, fmt.Errorf("sock_diag query %v -> %v: %w", client, server, errno)
		case unix.NLMSG_DONE:
			return 0, true, fmt.Errorf("%w: %v -> %v", ErrNotFound, client, server)
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) < inetDiagMsgLen {
				return 0, true, errors.New("short sock_diag answer")
			}
			// An unconnected UDP socket has no peer port.
			peer := binary.BigEndian.Uint16(msg[6:])
			if binary.BigEndian.Uint16(msg[4:]) != client.Port() || peer != server.Port() && !(proto == unix.IPPROTO_UDP && peer == 0) {
				return 0, true, errors.New("sock_diag answered for another socket")
			}
			ino := uint64(ne.Uint32(msg[68:]))
			if ino == 0 {
				// TIME_WAIT and the like: no file, so no process.
				return 0, true, fmt.Errorf("%w: %v -> %v has no socket file (state %d)", ErrNoOwner, client, server, msg[1])
			}
			return ino, true, nil
		}
	}
	return 0, false, nil
}
