package hooks

// Step 5 of the sandbox: the inner network namespace the agent runs in,
// the veth pair to the outer (engine's) namespace, addresses from the
// global allocator and the nftables rules on both sides. Every piece is
// made through netlink; each step registers its undo, and the state file
// is written before the first step so that TeardownNetwork can clean up
// after a crash at any point.

import (
	"errors"
	"fmt"
	"github.com/vishvananda/netlink"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// NetworkSpec is what SetupNetwork builds.
type NetworkSpec struct {
	// Dir is the sandbox's state directory (it must exist). The inner
	// netns is pinned at Dir/netns and the state kept in Dir/network.json.
	Dir string
	// OuterNetNS is the path of the outer netns (an engine's
	// /proc/PID/ns/net, a pinned netns file); "" means the caller's.
	OuterNetNS string
	// Pool is the IPv4 pool /30s are allocated from (10.200.0.0/16 by
	// default in the admin config).
	Pool netip.Prefix
	// AllocDir is the global allocator directory (e.g. /run/moat/alloc).
	AllocDir string
	// Egress makes the veth pair, addresses, routes and the outer rules.
	// Without it the inner netns has only loopback.
	Egress bool
	// ProxyPort is the port the sidecar's proxy listens on (3128).
	ProxyPort uint16
	// NFLogGroup is the NFLOG group of refused bypass attempts.
	NFLogGroup uint16
	// NFQueue is the NFQUEUE new TCP connections of an egress sandbox go
	// to before they are refused, so the sidecar can name the calling
	// binary while the socket exists; its verdict (NF_REPEAT with
	// RejectMark) then gets them a TCP reset. 0: no queue, TCP is only
	// logged and refused like the rest. With a queue but no listener the
	// kernel drops the SYNs: connects time out instead of being refused.
	NFQueue uint16
	// InboundPorts are the inner ports the sidecar forwards connections to.
	InboundPorts []uint16
	// OuterDisposable says the caller made the outer netns for this
	// sandbox and removes it right after TeardownNetwork: the outer table
	// and the veth then go with it instead of being deleted one by one
	// (deleting a veth alone costs the kernel some 25 ms).
	OuterDisposable bool
	// KernelDir is where setups remember what they learnt about the
	// kernel, so that each one does not find it out again (the runtime's
	// state directory); "" remembers nothing. See xtQueueMemo.
	KernelDir string
}

// setup is one SetupNetwork in progress.
type setup struct {
	spec  NetworkSpec
	dir   string
	n     *Network
	outer *os.File // the outer netns (egress)
	inner *os.File // the inner netns
	oc    *nsConn  // sockets in the outer netns
	ic    *nsConn  // sockets in the inner netns
	undo  undoStack
}

// step is one stage of the setup.
type step struct {
	name string
	do   func(*setup) error
}

// SetupNetwork makes the sandbox's network namespace step. It is all or
// nothing: on error every step already done is undone.
func SetupNetwork(spec NetworkSpec) (*Network, error) {
	n, finish, err := StartNetwork(spec)
	if err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return n, nil
}

// StartNetwork is SetupNetwork for a caller that has other work to do
// meanwhile. It returns once the inner netns exists (the returned Network
// names it; a sandbox without egress has nothing else a caller needs) and
// finishes the rest in the background: for a sandbox without egress its
// loopback and state. finish waits for that and reports how it went, with
// everything undone on error as SetupNetwork would; it must be called
// before the sandbox's process runs and before any teardown, and returns
// the same result every time. With egress every step is done when
// StartNetwork returns.
func StartNetwork(spec NetworkSpec) (n *Network, finish func() error, err error) {
	s, err := newSetup(spec)
	if err != nil {
		return nil, nil, err
	}
	steps := s.steps()
	first := len(steps)
	if !spec.Egress {
		first = 2 // the plan and the inner netns itself
	}
	if err := s.runSteps(0, first); err != nil {
		err = errors.Join(err, s.undo.run()) // the undo uses s's sockets
		s.close()
		return nil, nil, err
	}
	// The caller's copy: the rest of the setup changes s.n.
	out := *s.n
	if first == len(steps) {
		s.close()
		return &out, func() error { return nil }, nil
	}
	done := make(chan error, 1)
	go func() {
		err := s.runSteps(first, len(steps))
		if err != nil {
			err = errors.Join(err, s.undo.run())
		}
		s.close()
		done <- err
	}()
	return &out, sync.OnceValue(func() error { return <-done }), nil
}

// newSetup validates spec.
func newSetup(spec NetworkSpec) (*setup, error) {
	dir, err := filepath.Abs(spec.Dir)
	if err != nil || spec.Dir == "" {
		return nil, fmt.Errorf("network state directory %q: invalid", spec.Dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("network state directory %s: not a directory", dir)
	}
	if spec.Egress {
		if err := checkPool(spec.Pool); err != nil {
			return nil, err
		}
		if spec.ProxyPort == 0 {
			return nil, errors.New("network: proxy port 0")
		}
		if spec.AllocDir == "" {
			return nil, errors.New("network: no address allocator directory")
		}
		for _, p := range spec.InboundPorts {
			if p == 0 {
				return nil, errors.New("network: inbound port 0")
			}
		}
	}
	return &setup{spec: spec, dir: dir}, nil
}

// steps lists the stages in order. The outer rules go in before the veth
// exists, so its outer end is never unguarded.
func (s *setup) steps() []step {
	if !s.spec.Egress {
		return []step{
			{"plan", (*setup).plan},
			{"inner netns", (*setup).innerOnly},
			{"inner loopback", (*setup).configureInner},
			{"record", (*setup).record},
		}
	}
	return []step{
		{"plan", (*setup).plan},
		{"pin outer netns", (*setup).pinOuter},
		{"allocate", (*setup).allocate},
		{"inner netns and outer rules", (*setup).prepare},
		{"veth", (*setup).veth},
		{"inner addresses", (*setup).innerAddresses},
		{"record", (*setup).record},
	}
}

// run does the first limit steps (tests stop a setup part way).
func (s *setup) run(limit int) error { return s.runSteps(0, limit) }

// runSteps does steps from to to-1.
func (s *setup) runSteps(from, to int) error {
	for _, st := range s.steps()[from:min(to, len(s.steps()))] {
		if err := st.do(s); err != nil {
			return fmt.Errorf("network setup (%s): %w", st.name, err)
		}
	}
	return nil
}

// close releases what the setup holds open; what it made stays.
func (s *setup) close() {
	for _, c := range []*nsConn{s.oc, s.ic} {
		if c != nil {
			c.Close()
		}
	}
	for _, f := range []*os.File{s.outer, s.inner} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// plan writes the state file naming everything the setup will make.
func (s *setup) plan() error {
	if _, err := os.Lstat(filepath.Join(s.dir, stateFile)); err == nil {
		return fmt.Errorf("%s already has a network; tear it down first", s.dir)
	}
	id := sandboxID(s.dir)
	s.n = &Network{InnerPath: filepath.Join(s.dir, InnerNetNSFile), Egress: s.spec.Egress, OuterDisposable: s.spec.OuterDisposable}
	if s.spec.Egress {
		outer, err := openNetNS(s.spec.OuterNetNS)
		if err != nil {
			return err
		}
		s.outer = outer
		var st unix.Stat_t
		if err := unix.Fstat(int(outer.Fd()), &st); err != nil {
			return fmt.Errorf("stat outer network namespace: %w", err)
		}
		s.n.OuterInode = st.Ino
		s.n.OuterPath = filepath.Join(s.dir, outerPinFile)
		s.n.VethOuter = "moat" + id
		s.n.VethInner = vethInnerName
		s.n.Table = "moat_" + id
		s.n.AllocNS = allocNSDir(s.spec.AllocDir, st.Ino)
	}
	if err := writeState(s.dir, s.n); err != nil {
		return err
	}
	s.undo.push(func() error { return removeState(s.dir) })
	return nil
}

// pinOuter pins the outer netns so teardown can always enter it.
func (s *setup) pinOuter() error {
	if err := pinNetNS(s.outer, s.n.OuterPath); err != nil {
		return err
	}
	s.undo.push(func() error { return unpinNetNS(s.n.OuterPath) })
	return nil
}

// allocate takes a /30 for the veth pair.
func (s *setup) allocate() error {
	used, err := s.outerAddrs()
	if err != nil {
		return err
	}
	taken := func(sub netip.Prefix) bool {
		for _, a := range used {
			if sub.Contains(a) {
				return true
			}
		}
		return false
	}
	file, sub, err := allocate(s.n.AllocNS, s.spec.Pool, s.dir, taken)
	if err != nil {
		return err
	}
	s.undo.push(func() error { return release(file, s.dir) })
	outer := sub.Addr().Next()
	s.n.Alloc = file
	s.n.OuterAddr = netip.PrefixFrom(outer, sub.Bits())
	s.n.InnerAddr = netip.PrefixFrom(outer.Next(), sub.Bits())
	s.n.Proxy = netip.AddrPortFrom(outer, s.spec.ProxyPort)
	return nil
}

// outerAddrs lists the IPv4 addresses on the outer netns's interfaces: a
// /30 holding one of them is not allocated, whoever put it there.
func (s *setup) outerAddrs() ([]netip.Addr, error) {
	ns, err := openNetNS(s.n.OuterPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	c, err := dialNetNS(ns)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	list, err := c.rt.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list the outer network namespace's addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(list))
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// innerOnly makes the inner netns of a sandbox without egress (its
// loopback comes next: configureInner).
func (s *setup) innerOnly() error { return s.createInner(&s.undo) }

// prepare builds the inner netns and the outer rules side by side: they
// touch different namespaces and take about as long.
func (s *setup) prepare() error {
	var innerUndo, outerUndo undoStack
	var outerErr error
	var wg sync.WaitGroup
	wg.Go(func() { outerErr = s.outerRules(&outerUndo) })
	innerErr := s.buildInner(&innerUndo)
	wg.Wait()
	// Undone last first: the outer table goes before the inner netns.
	s.undo = append(append(s.undo, innerUndo...), outerUndo...)
	return errors.Join(innerErr, outerErr)
}

// buildInner makes the inner netns and configures it.
func (s *setup) buildInner(u *undoStack) error {
	if err := s.createInner(u); err != nil {
		return err
	}
	return s.configureInner()
}

// createInner makes and pins the inner netns.
func (s *setup) createInner(u *undoStack) error {
	c, ino, err := createNetNS(s.n.InnerPath)
	if err != nil {
		return err
	}
	s.ic = c
	u.push(func() error { return unpinNetNS(s.n.InnerPath) })
	s.n.InnerInode = ino
	s.inner, err = openNetNS(s.n.InnerPath)
	return err
}

// configureInner sets the inner netns's loopback up and, with egress,
// routes through lo what no other route takes and installs its table
// (which goes with the netns). Without egress the netns has loopback and
// nothing else: no route leads anywhere, so every connection or datagram
// to another address fails at once in the kernel's route lookup
// (ENETUNREACH), and no table is needed to refuse it. Its base chains
// would cost each start and teardown a kernel code patch on a host where
// nothing else hooks netfilter; no sidecar reads a log of such a
// sandbox's attempts.
func (s *setup) configureInner() error {
	c := s.ic
	if err := loopbackUp(c); err != nil {
		return err
	}
	if !s.spec.Egress {
		return nil
	}
	if err := loopbackRoute6(c); err != nil {
		return err
	}
	r := innerRules{proxy: s.n.Proxy, inbound: s.spec.InboundPorts, logGroup: s.spec.NFLogGroup, queue: s.spec.NFQueue}
	queues := r.queue != 0
	if queues {
		r.xtQueue = rememberedXTQueue(s.spec.KernelDir)
	}
	addInnerTable(c.nft, r)
	err := c.nft.Flush()
	if err != nil && queues && errors.Is(err, unix.ENOENT) {
		// The kernel lacks the queue expression tried (the batch failed
		// as a whole): try the other one, and remember the one that works.
		r.xtQueue = !r.xtQueue
		addInnerTable(c.nft, r)
		if xerr := c.nft.Flush(); xerr != nil {
			err = fmt.Errorf("%w (with %s: %w)", err, queueExprName(r.xtQueue), xerr)
		} else {
			err = nil
			rememberXTQueue(s.spec.KernelDir, r.xtQueue)
		}
	}
	if err != nil {
		return fmt.Errorf("inner nftables table: %w", err)
	}
	return nil
}

// outerRules installs the sandbox's table in the outer netns.
func (s *setup) outerRules(u *undoStack) error {
	c, err := dialNetNS(s.outer)
	if err != nil {
		return err
	}
	s.oc = c
	addOuterTable(c.nft, s.n.Table, s.n.VethOuter, s.n.Proxy)
	if err := c.nft.Flush(); err != nil {
		return fmt.Errorf("outer nftables table %s: %w", s.n.Table, err)
	}
	u.push(func() error { return deleteTable(c.nft, s.n.Table) })
	return nil
}

// veth makes the pair with the MTU of the outer default route.
func (s *setup) veth() error {
	mtu, err := outerMTU(s.oc)
	if err != nil {
		return err
	}
	s.n.MTU = mtu
	created, err := addVeth(s.oc, s.inner, s.n.VethOuter, mtu, s.n.OuterAddr)
	if created {
		s.undo.push(func() error { return deleteLink(s.oc, s.n.VethOuter) })
	}
	return err
}

// innerAddresses configures eth0 and the default route.
func (s *setup) innerAddresses() error {
	return configureInner(s.ic, s.n.InnerAddr, s.n.OuterAddr.Addr())
}

// record marks the state complete.
func (s *setup) record() error {
	s.n.Ready = true
	return writeState(s.dir, s.n)
}

// OpenInner opens the inner netns (for moat-init to inherit), checking
// that the pin still holds the namespace setup made.
func (n *Network) OpenInner() (*os.File, error) {
	f, err := openNetNS(n.InnerPath)
	if err != nil {
		return nil, fmt.Errorf("open inner network namespace: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != n.InnerInode {
		_ = f.Close()
		return nil, fmt.Errorf("inner network namespace %s: not the sandbox's (inode %d, want %d)", n.InnerPath, st.Ino, n.InnerInode)
	}
	return f, nil
}

// undoStack holds the undo of each step done, run last first.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// run undoes every step, newest first, and empties the stack.
func (u *undoStack) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		if err := (*u)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*u = nil
	return errors.Join(errs...)
}
