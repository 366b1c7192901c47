//go:build linux

package bypass

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moatsandbox/moat/internal/nsthread"
	"golang.org/x/sys/unix"
)

const (
	// copyRange is how many bytes of each packet the kernel copies: enough
	// for an IPv6 header, a few extension headers and the ports.
	copyRange = 128
	// recvBufferBytes is the socket receive buffer asked for, so bursts
	// survive a slow callback.
	recvBufferBytes = 1 << 20
	// readBufferBytes holds one datagram; the kernel's default NFLOG
	// buffer is 4 KiB and each message is under 300 bytes here.
	readBufferBytes = 64 << 10
	// ackTimeout bounds the wait for the kernel's answer to the bind.
	ackTimeout = 5 * time.Second
	bindSeq    = 1
)

// errNotKernel marks a datagram that did not come from the kernel.
var errNotKernel = errors.New("netlink datagram from a process, not the kernel")

// nlConn is a NETLINK_NETFILTER socket tied to one network namespace, with
// what Monitor and Queue share: the bind handshake, the read loop's
// start and stop, and Close.
type nlConn struct {
	f       *os.File
	rc      syscall.RawConn
	buf     []byte
	pending []datagram // read while waiting for the bind acknowledgement

	running   atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

type datagram struct {
	b  []byte
	at time.Time
}

// where names the network namespace at path for error messages.
func where(path string) string {
	if path == "" {
		return "the current network namespace"
	}
	return "network namespace " + path
}

// dial opens the socket in the network namespace at path ("" for the
// caller's own) with a large receive buffer.
func (c *nlConn) dial(path, name string) error {
	fd, err := socketInNetNS(path)
	if err != nil {
		return err
	}
	// Best effort: without CAP_NET_ADMIN the kernel caps SO_RCVBUF at
	// net.core.rmem_max, which still works, only with earlier drops.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBufferBytes) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBufferBytes)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return err
	}
	c.f, c.rc, c.buf = f, rc, make([]byte, readBufferBytes)
	return nil
}

// request sends a configuration message with sequence number seq and
// waits for its acknowledgement, keeping the datagrams of other messages
// that arrive first for the read loop. overrun is called on ENOBUFS.
func (c *nlConn) request(b []byte, seq uint32, overrun func()) error {
	if err := c.send(b); err != nil {
		return err
	}
	if err := c.f.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return err
	}
	defer func() { _ = c.f.SetReadDeadline(time.Time{}) }()
	for {
		b, err := c.recv()
		switch {
		case errors.Is(err, unix.ENOBUFS):
			overrun()
			continue
		case errors.Is(err, errNotKernel):
			continue
		case err != nil:
			return fmt.Errorf("waiting for the kernel's answer: %w", err)
		}
		msgs, _ := splitMessages(b)
		acked, other := false, false
		var ackErr error
		for _, msg := range msgs {
			if msg.typ == nlmsgError && msg.seq == seq {
				acked, ackErr = true, ackError(msg.data)
			} else {
				other = true
			}
		}
		if other {
			c.pending = append(c.pending, datagram{b: bytes.Clone(b), at: time.Now()})
		}
		if !acked {
			continue
		}
		switch {
		case errors.Is(ackErr, unix.EBUSY):
			return fmt.Errorf("another socket already listens on it (%w)", ackErr)
		case errors.Is(ackErr, unix.EPERM):
			return fmt.Errorf("another socket already listens on it, or this process lacks CAP_NET_ADMIN (%w)", ackErr)
		}
		return ackErr
	}
}

// start begins a read loop: it fails if one is running, clears the read
// deadline, and makes ctx's end wake a blocked recv (which then returns
// os.ErrDeadlineExceeded). The caller defers the returned stop. A closed
// connection gives errClosed, a done ctx its own error.
func (c *nlConn) start(ctx context.Context) (stop func(), err error) {
	if !c.running.CompareAndSwap(false, true) {
		return nil, errors.New("another Run is already running")
	}
	if err := c.f.SetReadDeadline(time.Time{}); err != nil {
		c.running.Store(false)
		if c.closed.Load() {
			return nil, errClosed
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		c.running.Store(false)
		return nil, err
	}
	quit, watcher := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-ctx.Done():
			_ = c.f.SetReadDeadline(time.Unix(1, 0))
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-watcher
		c.running.Store(false)
	}, nil
}

// run is the read loop of Monitor.Run and Queue.Run, what naming the
// group or queue in errors: it hands handle the datagrams read during the
// bind, then every datagram as it comes, until ctx is done (it then
// returns ctx.Err()) or the connection is closed (it then returns nil).
// An overrun of the socket buffer calls overrun and goes on; an error from
// handle, or from the socket, ends the loop.
func (c *nlConn) run(ctx context.Context, what string, handle func(b []byte, at time.Time) error, overrun func()) error {
	stop, err := c.start(ctx)
	switch {
	case errors.Is(err, errClosed):
		return nil
	case err != nil && err == ctx.Err():
		return err
	case err != nil:
		return fmt.Errorf("bypass: %s: %w", what, err)
	}
	defer stop()
	for _, d := range c.takePending() {
		if err := handle(d.b, d.at); err != nil {
			return c.closedOr(err)
		}
	}
	for {
		b, err := c.recv()
		switch {
		case err == nil:
			if err := handle(b, time.Now()); err != nil {
				return c.closedOr(err)
			}
		case errors.Is(err, unix.ENOBUFS):
			overrun()
		case errors.Is(err, errNotKernel):
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return ctx.Err()
			}
		case c.closed.Load():
			return nil
		default:
			return fmt.Errorf("bypass: reading %s: %w", what, err)
		}
	}
}

// closedOr is nil once the connection is closed, else err.
func (c *nlConn) closedOr(err error) error {
	if c.closed.Load() {
		return nil
	}
	return err
}

// errClosed is what start returns on a closed connection.
var errClosed = errors.New("closed")

// takePending hands over the datagrams read during the bind.
func (c *nlConn) takePending() []datagram {
	p := c.pending
	c.pending = nil
	return p
}

// close releases the socket once; name says which in the error.
func (c *nlConn) close(name string) error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if err := c.f.Close(); err != nil {
			c.closeErr = fmt.Errorf("bypass: close %s socket: %w", name, err)
		}
	})
	return c.closeErr
}

func (c *nlConn) send(b []byte) error {
	var serr error
	err := c.rc.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("send: %w", os.NewSyscallError("sendto", serr))
	}
	return nil
}

// recv reads one datagram into c.buf. A datagram larger than the buffer
// is counted as an overrun (ENOBUFS) and the buffer grown for the next one.
func (c *nlConn) recv() ([]byte, error) {
	var (
		n    int
		from unix.Sockaddr
		rerr error
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, from, rerr = unix.Recvfrom(int(fd), c.buf, unix.MSG_TRUNC)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, os.NewSyscallError("recvfrom", rerr)
	}
	if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
		return nil, errNotKernel
	}
	if n > len(c.buf) {
		c.buf = make([]byte, align4(n))
		return nil, unix.ENOBUFS
	}
	return c.buf[:n], nil
}

// ackError reads the errno of an NLMSG_ERROR message (zero for an
// acknowledgement).
func ackError(data []byte) error {
	if len(data) < 4 {
		return fmt.Errorf("netlink error message of %d bytes: %w", len(data), errTruncated)
	}
	code := int32(ne.Uint32(data))
	switch {
	case code == 0:
		return nil
	case code > 0 || code == math.MinInt32:
		return fmt.Errorf("netlink error message with code %d", code)
	}
	return unix.Errno(-code)
}

// socketInNetNS creates and binds a NETLINK_NETFILTER socket inside the
// network namespace at path, on a thread switched into it
// (internal/nsthread).
func socketInNetNS(path string) (int, error) {
	if path == "" {
		return newNetlinkSocket()
	}
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(target)
	fd, err := nsthread.Socket(target, newNetlinkSocket)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	return fd, nil
}

func newNetlinkSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	return fd, nil
}
