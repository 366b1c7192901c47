package identity

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/moatsandbox/moat/policy"
	"golang.org/x/sys/unix"
)

// maxDepth bounds the walk from a process up through its ancestors.
const maxDepth = 64

// Resolver tells which sandbox process opened a connection to the proxy.
// One Resolver serves one sandbox for its lifetime (which is also the
// lifetime of its trust-on-first-use records). It is safe for concurrent
// use; lookups take turns, except for hashing a new executable.
type Resolver struct {
	trust    *trustStore
	initPath string // moat-init's path, left out of ancestors

	// mu serializes lookups over the fields below it.
	mu     sync.Mutex
	diag   *sockDiag
	icmp   *icmpSockets
	procs  *procTable
	closed bool
}

// New opens the sandbox's inner netns, creates the sock_diag socket inside
// it, opens its tables of ICMP sockets, and keeps them for every lookup.
func New(cfg Config) (*Resolver, error) {
	root := cfg.ProcRoot
	if root == "" {
		root = "/proc"
	}
	if cfg.InnerNetNS == "" {
		return nil, fmt.Errorf("identity resolver: no inner netns given")
	}
	nsFd, err := unix.Open(cfg.InnerNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open inner netns %s: %w", cfg.InnerNetNS, err)
	}
	defer unix.Close(nsFd)
	var st unix.Stat_t
	if err := unix.Fstat(nsFd, &st); err != nil {
		return nil, fmt.Errorf("stat inner netns %s: %w", cfg.InnerNetNS, err)
	}
	diag, err := newSockDiag(nsFd)
	if err != nil {
		return nil, fmt.Errorf("inner netns %s: %w", cfg.InnerNetNS, err)
	}
	return &Resolver{
		trust:    newTrustStore(),
		initPath: initPath,
		diag:     diag,
		icmp:     newICMPSockets(nsFd, root),
		procs:    newProcTable(root, uint64(st.Dev), st.Ino),
	}, nil
}

// Close releases the sock_diag socket; later lookups fail with ErrClosed.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.procs.close()
	r.icmp.close()
	if err := r.diag.close(); err != nil {
		return fmt.Errorf("close sock_diag socket: %w", err)
	}
	return nil
}

// Lookup returns the sandbox process that holds the client end of a
// connection to the proxy: client is the connecting socket's address and
// server the proxy address it connected to, both as seen in the inner
// netns. Any error denies the connection: the socket is not in the netns
// (ErrNotFound), no sandbox process holds it (ErrNoOwner), two do
// (ErrAmbiguousOwner), an executable was deleted (ErrDeletedExe), or an
// executable's content changed since its path was first seen (returned
// as *IntegrityError).
func (r *Resolver) Lookup(ctx context.Context, client, server netip.AddrPort) (*Process, error) {
	return r.lookup(ctx, unix.IPPROTO_TCP, client, server)
}

// LookupUDP is Lookup for the UDP socket that sent a datagram from client
// to server (connected or not), as seen in the inner netns: the bypass
// queue names the sender of a direct UDP datagram with it.
func (r *Resolver) LookupUDP(ctx context.Context, client, server netip.AddrPort) (*Process, error) {
	return r.lookup(ctx, unix.IPPROTO_UDP, client, server)
}

// LookupICMP is Lookup for the socket that sent an ICMP echo request
// with identifier id from src, as seen in the inner netns: a ping socket
// bound to that identifier, else the one raw ICMP socket there (with
// several, the sender is ambiguous). The bypass queue names the sender of
// a direct ping with it.
func (r *Resolver) LookupICMP(ctx context.Context, src netip.Addr, id uint16) (*Process, error) {
	return r.lookupWith(ctx, func() (uint64, fmt.Stringer, error) {
		ino, err := r.icmp.inode(src, id)
		return ino, echoDesc{src, id}, err
	})
}

func (r *Resolver) lookup(ctx context.Context, proto uint8, client, server netip.AddrPort) (*Process, error) {
	return r.lookupWith(ctx, func() (uint64, fmt.Stringer, error) {
		ino, err := r.diag.inode(proto, client, server)
		return ino, tupleDesc{client, server}, err
	})
}

// lookupWith is Lookup for the socket whose inode find returns, under
// the resolver's lock, with what to call it in errors.
func (r *Resolver) lookupWith(ctx context.Context, find func() (uint64, fmt.Stringer, error)) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := r.resolve(find)
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()
	if err != nil {
		return nil, err
	}
	p := &Process{PID: links[0].pid}
	for i, l := range links {
		sum := l.sum
		if sum == "" {
			if sum, err = r.trust.hash(ctx, l.exe, l.key); err != nil {
				return nil, fmt.Errorf("hash executable %s of pid %d: %w", l.path, l.pid, err)
			}
		}
		if err := r.trust.check(l, sum); err != nil {
			return nil, err
		}
		exe := policy.Exe{Path: l.path, Fingerprint: sum}
		if i == 0 {
			p.Exe = exe
		} else {
			p.Ancestors = append(p.Ancestors, exe)
			p.AncestorPIDs = append(p.AncestorPIDs, l.pid)
		}
		for _, a := range l.cmdline {
			if !slices.Contains(p.CmdlinePaths, a) {
				p.CmdlinePaths = append(p.CmdlinePaths, a)
			}
		}
	}
	return p, nil
}

// resolve finds the socket, its holder and the holder's chain of
// ancestors in the netns, under the lock. The links it returns (also with
// an error) hold open executables.
func (r *Resolver) resolve(find func() (uint64, fmt.Stringer, error)) ([]*link, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	inode, desc, err := find()
	if err != nil {
		return nil, err
	}
	t := r.procs
	pids, inherited := t.holders(inode)
	if len(pids) == 0 {
		return nil, fmt.Errorf("%w: socket inode %d (%v)", ErrNoOwner, inode, desc)
	}
	if len(pids) > 1 {
		return nil, ambiguous(inode, pids)
	}
	links, err := r.walk(pids[0], inherited)
	if err != nil {
		return links, err
	}
	if inherited {
		// An ancestor that forked the holder may still hold the socket
		// too; the walk has just read their fds in full.
		pids = t.confirmed(inode)
		switch {
		case len(pids) > 1:
			return links, ambiguous(inode, pids)
		case len(pids) == 0 || pids[0] != links[0].pid:
			return links, fmt.Errorf("%w: socket inode %d (%v) was closed", ErrNoOwner, inode, desc)
		}
	}
	t.markOwner(links[0].pid)
	return links, nil
}

// tupleDesc and echoDesc name a looked-up socket in errors (formatted
// only then).
type tupleDesc struct{ client, server netip.AddrPort }

func (d tupleDesc) String() string { return d.client.String() + " -> " + d.server.String() }

type echoDesc struct {
	src netip.Addr
	id  uint16
}

func (d echoDesc) String() string { return fmt.Sprintf("ICMP echo from %v, id %d", d.src, d.id) }

func ambiguous(inode uint64, pids []int) error {
	return fmt.Errorf("%w: socket inode %d is held by pids %v", ErrAmbiguousOwner, inode, pids)
}

// walk reads the holder and then its parents while they are in the inner
// netns, leaving moat-init out of the chain but walking past it. With
// inherited, it reads each ancestor's fds in full for copies of the
// socket.
func (r *Resolver) walk(leaf int, inherited bool) ([]*link, error) {
	t := r.procs
	var links []*link
	pid := leaf
	for depth := 0; depth < maxDepth && pid > 0; depth++ {
		p := t.get(pid)
		if p.statFd < 0 {
			// Not bound to a process yet: the pid may have been reused
			// since it was classified. (Once bound, it stays in its
			// netns: seccomp keeps sandbox processes from leaving.)
			t.recheck(p)
		}
		if !p.member {
			if depth == 0 {
				return links, fmt.Errorf("%w: pid %d left the sandbox network namespace", ErrNoOwner, pid)
			}
			break // the first parent outside the sandbox ends the chain
		}
		ppid, err := t.parent(p)
		if err != nil {
			if depth == 0 {
				return links, fmt.Errorf("%w: %w", ErrNoOwner, err)
			}
			break // the parent just exited
		}
		l := t.knownLink(p, depth > 0, r.trust)
		if l == nil {
			if l, err = t.readLink(p, depth > 0); err != nil {
				return links, err
			}
		}
		if depth > 0 && l.path == r.initPath {
			l.close()
		} else {
			links = append(links, l)
		}
		if depth > 0 && inherited {
			t.scan(p, true, 0)
		}
		pid = ppid
	}
	return links, nil
}
