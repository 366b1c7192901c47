package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// initPath is moat-init as every sandbox process sees it; it is left
	// out of ancestor lists.
	initPath       = "/.moat/init"
	deletedSuffix  = " (deleted)"
	maxCmdline     = 64 << 10
	maxHashEntries = 4096
	hashChunk      = 256 << 10
)

// exeKey identifies one version of an executable file: fstat of the open
// /proc/PID/exe. Same key, same content, so the hash is reused.
type exeKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

// link is one process of a caller's chain, read under the resolver's
// lock; exe stays open so the very file the process runs is what gets
// hashed.
type link struct {
	pid      int
	path     string
	key      exeKey
	exe      int    // -1 for a link known from an earlier read (sum set)
	sum      string // the hash, when already known
	mntNS    uint64
	cmdline  []string
	ancestor bool
}

// close releases the executable the link holds open, if any.
func (l *link) close() {
	if l.exe >= 0 {
		unix.Close(l.exe)
		l.exe = -1
	}
}

// parent reads p's parent pid from its stat file, kept open. An error
// means p has exited; p is then dropped from the table.
func (t *procTable) parent(p *proc) (int, error) {
	if p.statFd < 0 {
		fd, err := unix.Open(t.root+"/"+strconv.Itoa(p.pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.drop(p)
			return 0, fmt.Errorf("open stat of pid %d: %w", p.pid, err)
		}
		p.statFd, p.mntNS, p.cmdline, p.exePath = fd, 0, nil, "" // the cache starts with the fd
	}
	n, err := unix.Pread(p.statFd, t.statBuf, 0)
	if err != nil {
		t.drop(p)
		return 0, fmt.Errorf("read stat of pid %d: %w", p.pid, err)
	}
	ppid, ok := parseStat(t.statBuf[:n])
	if !ok {
		return 0, fmt.Errorf("parse stat of pid %d", p.pid)
	}
	return ppid, nil
}

// parseStat takes the parent pid (field 4) from a /proc/PID/stat line;
// the command name (field 2) may hold anything, so fields are counted
// from its closing parenthesis.
func parseStat(b []byte) (ppid int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}

// readLink opens p's executable and reads what identifies it. The caller
// closes l.exe.
func (t *procTable) readLink(p *proc, ancestor bool) (*link, error) {
	dir := t.root + "/" + strconv.Itoa(p.pid)
	fd, err := unix.Open(dir+"/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open executable of pid %d: %w", p.pid, err)
	}
	l := &link{pid: p.pid, exe: fd, ancestor: ancestor}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat executable of pid %d: %w", p.pid, err)
	}
	l.key = exeKey{uint64(st.Dev), st.Ino, st.Size, st.Mtim, st.Ctim}
	// The path of the file just opened (the path the container sees), so
	// path and content cannot come from two different execs.
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), t.linkBuf)
	if err != nil {
		return nil, fmt.Errorf("read executable path of pid %d: %w", p.pid, err)
	}
	path, deleted := strings.CutSuffix(string(t.linkBuf[:n]), deletedSuffix)
	l.path = path
	if deleted || st.Nlink == 0 {
		who := "pid"
		if ancestor {
			who = "ancestor pid"
		}
		return nil, fmt.Errorf("%w: %s (%s %d)", ErrDeletedExe, path, who, p.pid)
	}

	if p.mntNS == 0 {
		var ns unix.Stat_t
		if err := unix.Stat(dir+"/ns/mnt", &ns); err != nil {
			return nil, fmt.Errorf("stat mount namespace of pid %d: %w", p.pid, err)
		}
		p.mntNS = ns.Ino
	}
	l.mntNS = p.mntNS

	if p.cmdKey != l.key || p.cmdline == nil {
		if t.cmdBuf == nil {
			t.cmdBuf = make([]byte, maxCmdline)
		}
		b, err := readSmall(dir+"/cmdline", t.cmdBuf)
		if err != nil {
			return nil, fmt.Errorf("read cmdline of pid %d: %w", p.pid, err)
		}
		p.cmdline, p.cmdKey = absoluteArgs(b), l.key
	}
	l.cmdline, p.exePath = p.cmdline, path
	ok = true
	return l, nil
}

// knownLink returns p's link without opening its executable: when the
// file /proc/PID/exe leads to is the one the last full read of p found
// (same device, inode, size, mtime and ctime) and its hash is known, the
// path, mount namespace and cmdline read then still hold. An exec of
// another file changes the identity. (An exec of the same file under
// another name, a hard link, keeps the earlier path: the content, which
// is what a path stands for in a policy, is the same.) It returns nil
// when p must be read in full, which also reports any error.
func (t *procTable) knownLink(p *proc, ancestor bool, trust *trustStore) *link {
	if p.exePath == "" || p.mntNS == 0 {
		return nil
	}
	var st unix.Stat_t
	if unix.Stat(t.root+"/"+strconv.Itoa(p.pid)+"/exe", &st) != nil || st.Nlink == 0 {
		return nil
	}
	key := exeKey{uint64(st.Dev), st.Ino, st.Size, st.Mtim, st.Ctim}
	if key != p.cmdKey {
		return nil
	}
	sum, ok := trust.known(key)
	if !ok {
		return nil
	}
	return &link{pid: p.pid, path: p.exePath, key: key, exe: -1, sum: sum,
		mntNS: p.mntNS, cmdline: p.cmdline, ancestor: ancestor}
}

// absoluteArgs returns the argv entries that are absolute paths; never
// nil, so an empty result is cached too.
func absoluteArgs(cmdline []byte) []string {
	out := []string{}
	for _, a := range bytes.Split(cmdline, []byte{0}) {
		if len(a) > 1 && a[0] == '/' {
			out = append(out, string(a))
		}
	}
	return out
}

// trustStore hashes executables (once per file version) and holds the
// first hash seen at each path, per mount namespace: containers sharing a
// sandbox (a Kubernetes pod) each have their own images, so the same path
// may rightly hold different binaries in two of them.
type trustStore struct {
	mu       sync.Mutex
	hashes   map[exeKey]string
	inflight map[exeKey]*hashCall
	first    map[trustKey]string
}

type trustKey struct {
	mntNS uint64
	path  string
}

type hashCall struct {
	done chan struct{}
	sum  string
	err  error
}

func newTrustStore() *trustStore {
	return &trustStore{
		hashes:   map[exeKey]string{},
		inflight: map[exeKey]*hashCall{},
		first:    map[trustKey]string{},
	}
}

// known returns the hash of a file version hashed before.
func (s *trustStore) known(key exeKey) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum, ok := s.hashes[key]
	return sum, ok
}

// hash returns the hex SHA-256 of the file open at fd. A file is hashed
// once per version, by one goroutine however many lookups wait for it,
// and the hashing goes on (to be cached) when a waiting lookup gives up.
func (s *trustStore) hash(ctx context.Context, fd int, key exeKey) (string, error) {
	s.mu.Lock()
	if sum, ok := s.hashes[key]; ok {
		s.mu.Unlock()
		return sum, nil
	}
	c := s.inflight[key]
	if c == nil {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			s.mu.Unlock()
			return "", fmt.Errorf("duplicate executable fd: %w", err)
		}
		c = &hashCall{done: make(chan struct{})}
		s.inflight[key] = c
		go s.run(c, dup, key)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.sum, c.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (s *trustStore) run(c *hashCall, fd int, key exeKey) {
	c.sum, c.err = hashFile(fd, key)
	unix.Close(fd)
	s.mu.Lock()
	delete(s.inflight, key)
	if c.err == nil {
		if len(s.hashes) >= maxHashEntries {
			clear(s.hashes) // many binaries: start over rather than grow
		}
		s.hashes[key] = c.sum
	}
	s.mu.Unlock()
	close(c.done)
}

func hashFile(fd int, key exeKey) (string, error) {
	h := sha256.New()
	buf := make([]byte, hashChunk)
	var off int64
	for {
		n, err := unix.Pread(fd, buf, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read executable: %w", err)
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("stat executable: %w", err)
	}
	if off != key.size || (exeKey{uint64(st.Dev), st.Ino, st.Size, st.Mtim, st.Ctim}) != key {
		return "", errors.New("executable changed while it was being hashed")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// check records sum as the trusted hash of l's path on first sight, and
// returns an *IntegrityError when the path held other content before.
func (s *trustStore) check(l *link, sum string) error {
	k := trustKey{l.mntNS, l.path}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.first[k]
	if !ok {
		s.first[k] = sum
		return nil
	}
	if old != sum {
		return &IntegrityError{Path: l.path, Ancestor: l.ancestor, Old: old, New: sum}
	}
	return nil
}
