package identity

import (
	"bytes"
	"io"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// fullListEvery bounds how long a pid that reappears after the pid
// counter wrapped can go unnoticed.
const fullListEvery = time.Second

// refresh lists pids in root: all of them when full, else only those
// handed out since the last listing, and none when there are none. The
// kernel's last allocated pid tells: procfs lists pids in increasing
// order and a listing can resume at a position seen before, so until the
// pid counter wraps, the new processes are listed from the last pid of
// the previous listing up to the current last pid. When the counter
// wrapped, when the last pid cannot be read, and at least every second,
// all pids are listed and exited processes forgotten. New pids are
// classified, and read in full when in the netns.
func (t *procTable) refresh(full bool) {
	last, ok := t.lastPid()
	if !ok {
		last = math.MaxInt
	}
	full = full || !ok || last < t.prevLast || time.Since(t.lastFull) > fullListEvery
	if !full && last == t.markPid {
		return // the newest pid was listed already
	}
	if t.procDir < 0 {
		fd, err := unix.Open(t.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return // keep what is known; the search still confirms each holder
		}
		t.procDir = fd
	}
	off, buf := t.markPos, t.dirBuf[:2048] // a few entries at a time
	if full {
		off, buf = 0, t.dirBuf
		t.gen++
		t.markPid, t.markPos = 0, 0
	}
	if _, err := unix.Seek(t.procDir, off, io.SeekStart); err != nil {
		return
	}
	var fresh []*proc
	pos, more := off, true
	for more {
		n, err := unix.Getdents(t.procDir, buf)
		if err != nil || n <= 0 {
			break
		}
		pos, more = eachNumber(buf[:n], pos, func(pid int, at int64) bool {
			if pid > last && !full {
				return false // older processes above a wrapped counter
			}
			if pid <= last {
				t.markPid, t.markPos = pid, at // the next listing resumes here
			}
			p := t.procs[pid]
			if p == nil {
				p = &proc{pid: pid, statFd: -1}
				t.procs[pid] = p
				fresh = append(fresh, p)
			}
			p.seen = t.gen
			return true
		})
	}
	t.prevLast = last
	if full {
		t.lastFull = time.Now()
		for _, p := range t.procs {
			if p.seen != t.gen {
				t.drop(p)
			}
		}
	}
	for _, p := range fresh { // after the listing: scanning reuses dirBuf
		t.recheck(p)
	}
}

// lastPid reads the last pid the kernel handed out.
func (t *procTable) lastPid() (int, bool) {
	if t.lastFd == -1 {
		fd, err := unix.Open(t.root+"/sys/kernel/ns_last_pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.lastFd = -2
			return 0, false
		}
		t.lastFd = fd
	}
	if t.lastFd < 0 {
		return 0, false
	}
	n, err := unix.Pread(t.lastFd, t.statBuf, 0)
	if err != nil || n == 0 {
		return 0, false
	}
	return atoi(bytes.TrimSpace(t.statBuf[:n]))
}
