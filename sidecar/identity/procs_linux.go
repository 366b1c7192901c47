package identity

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// maxRecent is how many recent owners a search re-reads first.
const maxRecent = 32

// procTable is what the resolver remembers about the machine's processes
// between lookups: which of them are in the inner netns (the sandbox's
// processes; no other process's fds are ever read), and for those, which
// socket each fd held when it was last read. An index from socket inode to
// holders turns most lookups into one readlink to confirm.
//
// Finding the holder of a new socket, cheapest first:
//  1. processes that appeared since the last lookup (see refresh) are
//     read in full, so the index has their sockets, inherited ones too;
//  2. the index: a process read since the socket was made;
//  3. the fds of recent owners that held sockets when last read, re-read
//     without listing the fds: a client that closes a connection and
//     opens another usually gets the same fd number back;
//  4. every sandbox process, recent owners and then the newest first,
//     reading the fds that are new since its last read or held sockets
//     then (a new socket takes the lowest free fd), stopping at the
//     holder;
//  5. every fd of every sandbox process, after listing every pid and
//     checking again which processes are in the netns (one that joined
//     it after it was first seen, like moat-init, is found here).
//
// Not safe for concurrent use.
type procTable struct {
	root         string
	nsDev, nsIno uint64 // the inner netns

	procs    map[int]*proc
	sockets  map[uint64][]holder // socket inode -> fds that held it when read
	gen      uint64              // bumps with each full listing of root
	procDir  int                 // root, open for listing; -1 until needed
	prevLast int                 // the last pid handed out, at the previous listing
	markPid  int                 // the largest pid listed up to prevLast
	markPos  int64               // where markPid is in root's listing
	lastFd   int                 // root/sys/kernel/ns_last_pid; -1 until opened, -2 if missing
	lastFull time.Time
	clock    uint64 // bumps with each owner found
	recent   []int  // recent owners, the latest first
	fdReads  uint64 // readlinks of fds so far (for tests and tuning)

	dirBuf  []byte
	linkBuf []byte
	statBuf []byte
	cmdBuf  []byte
}

type proc struct {
	pid     int
	member  bool   // in the inner netns when last checked
	seen    uint64 // the last listing that had it
	scanned bool   // fds was complete when last read
	fds     []fdSock
	owned   uint64 // clock when it last owned a looked-up socket, 0 never

	// Kept by the identity walk (exe_linux.go). statFd, its stat file
	// open, is bound to the process: once that exits, reads fail even if
	// the pid is reused, and what is cached below goes with it.
	statFd  int // -1 when not open
	mntNS   uint64
	cmdKey  exeKey // the executable the cmdline below was read for
	cmdline []string
	exePath string // the path the last full read found for cmdKey; "" none
}

type fdSock struct {
	fd  int32
	ino uint64 // socket inode, 0 if not a socket
}

type holder struct {
	pid int
	fd  int32
}

func newProcTable(root string, nsDev, nsIno uint64) *procTable {
	return &procTable{
		procDir: -1,
		lastFd:  -1,
		root:    root,
		nsDev:   nsDev,
		nsIno:   nsIno,
		procs:   map[int]*proc{},
		sockets: map[uint64][]holder{},
		dirBuf:  make([]byte, 32<<10),
		linkBuf: make([]byte, 4096),
		statBuf: make([]byte, 1024),
	}
}

// holders returns the distinct pids holding socket inode, found as
// cheaply as the comment on procTable describes. inherited is false when
// the socket turned up in a process read before, at an fd it did not
// have then: a socket it made (or was sent) after its fork, so not one
// its ancestors could have handed down.
func (t *procTable) holders(inode uint64) (pids []int, inherited bool) {
	t.refresh(false)
	if pids := t.confirmed(inode); len(pids) > 0 {
		return pids, true
	}
	for _, pid := range t.recent {
		if p := t.procs[pid]; p != nil && p.member && t.rereadSockets(p, inode) {
			return t.confirmed(inode), false
		}
	}
	for _, p := range t.members() {
		if t.scan(p, false, inode) {
			return t.confirmed(inode), false
		}
	}
	t.refresh(true)
	for _, p := range t.procs {
		if p.member {
			t.scan(p, true, 0)
		} else {
			t.recheck(p)
		}
	}
	return t.confirmed(inode), true
}

// members returns the sandbox processes, recent owners first, then the
// newest.
func (t *procTable) members() []*proc {
	members := make([]*proc, 0, len(t.procs))
	for _, p := range t.procs {
		if p.member {
			members = append(members, p)
		}
	}
	slices.SortFunc(members, func(a, b *proc) int {
		if c := cmp.Compare(b.owned, a.owned); c != 0 {
			return c
		}
		return cmp.Compare(b.pid, a.pid)
	})
	return members
}

// markOwner moves pid to the front of the recent owners.
func (t *procTable) markOwner(pid int) {
	p := t.procs[pid]
	if p == nil {
		return
	}
	t.clock++
	p.owned = t.clock
	if i := slices.Index(t.recent, pid); i >= 0 {
		t.recent = slices.Delete(t.recent, i, i+1)
	} else if len(t.recent) == maxRecent {
		t.recent = t.recent[:maxRecent-1]
	}
	t.recent = slices.Insert(t.recent, 0, pid)
}

// confirmed re-reads each indexed holder of inode and returns the pids
// that still hold it.
func (t *procTable) confirmed(inode uint64) []int {
	var pids []int
	for _, h := range slices.Clone(t.sockets[inode]) {
		p := t.procs[h.pid]
		if ino, _ := t.readFd(h.pid, h.fd); p == nil || !p.member || ino != inode {
			t.unindex(inode, h)
			if p != nil {
				p.scanned = false // stale: read it in full next time
			}
			continue
		}
		if !slices.Contains(pids, h.pid) {
			pids = append(pids, h.pid)
		}
	}
	return pids
}

// recheck classifies p again and reads its fds in full when it is (now)
// in the netns.
func (t *procTable) recheck(p *proc) {
	was := p.member
	p.member = t.inNetns(p.pid)
	switch {
	case p.member && (!was || !p.scanned):
		t.scan(p, true, 0)
	case !p.member && was:
		t.forget(p)
	}
}

// get returns pid's entry, unclassified when the pid was not listed.
func (t *procTable) get(pid int) *proc {
	p := t.procs[pid]
	if p == nil {
		p = &proc{pid: pid, statFd: -1, seen: t.gen}
		t.procs[pid] = p
	}
	return p
}

// drop removes an exited process.
func (t *procTable) drop(p *proc) {
	t.forget(p)
	if p.statFd >= 0 {
		unix.Close(p.statFd)
		p.statFd = -1
	}
	delete(t.procs, p.pid)
}

// close releases every open file.
func (t *procTable) close() {
	for _, p := range t.procs {
		t.drop(p)
	}
	if t.procDir >= 0 {
		unix.Close(t.procDir)
		t.procDir = -1
	}
	if t.lastFd >= 0 {
		unix.Close(t.lastFd)
		t.lastFd = -1
	}
}

func (t *procTable) inNetns(pid int) bool {
	var st unix.Stat_t
	if unix.Stat(t.root+"/"+strconv.Itoa(pid)+"/ns/net", &st) != nil {
		return false
	}
	return st.Ino == t.nsIno && uint64(st.Dev) == t.nsDev
}

// forget drops p's fds from the index.
func (t *procTable) forget(p *proc) {
	for _, f := range p.fds {
		if f.ino != 0 {
			t.unindex(f.ino, holder{p.pid, f.fd})
		}
	}
	p.fds, p.scanned = nil, false
}

// rereadSockets re-reads the fds of p that held sockets, without listing
// p's fds, stopping at want. It reports whether want was found.
func (t *procTable) rereadSockets(p *proc, want uint64) bool {
	found, gone := false, false
	for i := range p.fds {
		f := &p.fds[i]
		if f.ino == 0 {
			continue
		}
		ino, ok := t.readFd(p.pid, f.fd)
		t.unindex(f.ino, holder{p.pid, f.fd})
		if f.ino = ino; ino != 0 {
			t.sockets[ino] = append(t.sockets[ino], holder{p.pid, f.fd})
		}
		if !ok {
			f.fd, gone = -1, true // closed: a later listing sees the number as new
		}
		if ino == want {
			found = true
			break
		}
	}
	if gone {
		p.fds = slices.DeleteFunc(p.fds, func(f fdSock) bool { return f.fd < 0 })
	}
	return found
}

// scan lists p's fds and reads them: every one when full (or when p was
// never read in full), else only those that are new or held sockets, new
// ones first, stopping at want. It reports whether want was found.
func (t *procTable) scan(p *proc, full bool, want uint64) bool {
	full = full || !p.scanned
	fds, ok := t.listFds(p.pid)
	if !ok {
		t.forget(p)
		return false
	}
	next := make([]fdSock, 0, len(fds))
	var again []int // positions in next of old sockets, for a second round
	found := false
	for _, fd := range fds {
		old, known := findFd(p.fds, fd)
		switch {
		case full || !known:
			ino, ok := t.readFd(p.pid, fd)
			if !ok {
				continue // closed since the listing
			}
			next = append(next, fdSock{fd, ino})
			found = found || want != 0 && ino == want
		case old.ino != 0:
			again = append(again, len(next))
			next = append(next, old)
		default:
			next = append(next, old)
		}
	}
	closed := false
	for _, i := range again {
		if found {
			break
		}
		ino, ok := t.readFd(p.pid, next[i].fd)
		if !ok {
			next[i].fd, closed = -1, true
		}
		next[i].ino = ino
		found = want != 0 && ino == want
	}
	if closed {
		next = slices.DeleteFunc(next, func(f fdSock) bool { return f.fd < 0 })
	}
	t.forget(p)
	p.fds, p.scanned = next, true
	for _, f := range next {
		if f.ino != 0 {
			t.sockets[f.ino] = append(t.sockets[f.ino], holder{p.pid, f.fd})
		}
	}
	return found
}

func findFd(fds []fdSock, fd int32) (fdSock, bool) {
	i, ok := slices.BinarySearchFunc(fds, fd, func(f fdSock, fd int32) int { return cmp.Compare(f.fd, fd) })
	if !ok {
		return fdSock{}, false
	}
	return fds[i], true
}

func (t *procTable) unindex(inode uint64, h holder) {
	hs := t.sockets[inode]
	if i := slices.Index(hs, h); i >= 0 {
		hs = slices.Delete(hs, i, i+1)
	}
	if len(hs) == 0 {
		delete(t.sockets, inode)
	} else {
		t.sockets[inode] = hs
	}
}
