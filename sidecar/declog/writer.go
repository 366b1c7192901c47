package declog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// FileName is the current log file in the log directory; rotated
	// files are FileName.1 (the newest) to FileName.N-1 (the oldest).
	FileName = "decisions.log"
	// DefaultMaxSize and DefaultMaxFiles apply when Open is given zero or
	// less.
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 5

	// queueLen bounds the records waiting for the disk; past it Log drops
	// and counts rather than blocking the proxy.
	queueLen = 4096
	// closeTimeout bounds how long Close waits for a stuck disk.
	closeTimeout = 5 * time.Second
)

var _ Sink = (*Writer)(nil)

// ErrClosed is returned by Flush after Close.
var ErrClosed = errors.New("decision log is closed")

// Stats counts what happened to the records given to Log.
type Stats struct {
	Written uint64 // complete lines on disk
	Dropped uint64 // not queued: the queue was full or the writer closed
	Failed  uint64 // lost to an encoding, write or rotation error
	LastErr error  // the most recent such error, nil if none
}

// Writer appends records as JSON lines to a directory's decisions.log and
// rotates it when it would grow past a size cap. Log only queues the line;
// one goroutine writes, so a slow or stuck disk never blocks a caller.
// Writer implements Sink.
type Writer struct {
	dir      string
	maxSize  int64
	maxFiles int

	// mu guards the fields below it.
	mu       sync.Mutex
	queue    [][]byte
	closed   bool
	queued   uint64        // lines ever queued
	handled  uint64        // lines ever written or failed
	progress chan struct{} // closed and replaced whenever handled grows
	lastErr  error

	wake chan struct{} // one pending wake-up for the writing goroutine
	done chan struct{} // closed when the writing goroutine has returned

	written, dropped, failed atomic.Uint64

	// Owned by the writing goroutine.
	f        *os.File
	size     int64
	partial  bool  // the file ends inside a line
	closeErr error // set before done is closed
}

// Open opens (creating them as needed, the directory 0750) dir and its
// decisions.log for appending. The file is rotated before a line would
// take it past maxSizeBytes, keeping maxFiles files in all.
func Open(dir string, maxSizeBytes int64, maxFiles int) (*Writer, error) {
	if maxSizeBytes <= 0 {
		maxSizeBytes = DefaultMaxSize
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create decision log directory: %w", err)
	}
	w := &Writer{
		dir:      dir,
		maxSize:  maxSizeBytes,
		maxFiles: maxFiles,
		progress: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if err := w.openFile(); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// Log queues r, stamping it with the current time when r.Time is zero. It
// never blocks on the disk: when the queue is full the record is dropped
// and counted in Stats.
func (w *Writer) Log(r Record) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	line, err := json.Marshal(r)
	if err != nil {
		w.fail(1, fmt.Errorf("encode decision record: %w", err))
		return
	}
	line = append(line, '\n')

	w.mu.Lock()
	if w.closed || len(w.queue) >= queueLen {
		w.mu.Unlock()
		w.dropped.Add(1)
		return
	}
	w.queue = append(w.queue, line)
	w.queued++
	w.mu.Unlock()
	w.signal()
}

// Flush waits until every record queued before the call is on disk (or
// has failed), or until ctx ends.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	target := w.queued
	w.mu.Unlock()
	for {
		w.mu.Lock()
		handled, progress := w.handled, w.progress
		w.mu.Unlock()
		if handled >= target {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("flush decision log: %w", ctx.Err())
		}
	}
}

// Stats returns the counters so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	last := w.lastErr
	w.mu.Unlock()
	return Stats{
		Written: w.written.Load(),
		Dropped: w.dropped.Load(),
		Failed:  w.failed.Load(),
		LastErr: last,
	}
}

// Close writes what is queued and closes the file. Records logged after
// Close are dropped. It gives up after a few seconds when the disk does
// not respond.
func (w *Writer) Close() error {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.mu.Unlock()
	if !already {
		w.signal()
	}
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-w.done:
		return w.closeErr
	case <-t.C:
		return fmt.Errorf("close decision log: storage did not respond within %v", closeTimeout)
	}
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Writer) fail(n int, err error) {
	w.failed.Add(uint64(n))
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

// run is the writing goroutine: it takes the whole queue at a time.
func (w *Writer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		batch, closed := w.queue, w.closed
		w.queue = nil
		w.mu.Unlock()

		if len(batch) > 0 {
			w.writeBatch(batch)
			w.mu.Lock()
			w.handled += uint64(len(batch))
			close(w.progress)
			w.progress = make(chan struct{})
			w.mu.Unlock()
			continue // look again before sleeping or closing
		}
		if closed {
			if w.f != nil {
				if err := w.f.Close(); err != nil {
					w.closeErr = fmt.Errorf("close decision log: %w", err)
				}
			}
			return
		}
		<-w.wake
	}
}

// writeBatch writes lines, coalescing them into as few writes as the
// rotation boundaries allow.
func (w *Writer) writeBatch(lines [][]byte) {
	var buf []byte
	n := 0 // lines in buf
	for _, line := range lines {
		if w.size+int64(len(buf)+len(line)) > w.maxSize && w.size+int64(len(buf)) > 0 {
			w.writeBuf(buf, n)
			buf, n = buf[:0], 0
			if err := w.rotate(); err != nil {
				w.fail(0, err)
			}
		}
		buf = append(buf, line...)
		n++
	}
	w.writeBuf(buf, n)
}

// writeBuf writes n whole lines, counting each as written or failed.
func (w *Writer) writeBuf(buf []byte, n int) {
	if n == 0 {
		return
	}
	if w.f == nil {
		if err := w.openFile(); err != nil {
			w.fail(n, err)
			return
		}
	}
	lead := 0
	if w.partial {
		// A torn line from a failed write (or a crash before Open) must
		// not swallow the next record.
		buf = append([]byte{'\n'}, buf...)
		lead = 1
	}
	m, err := w.f.Write(buf)
	w.size += int64(m)
	whole := 0
	if m > 0 {
		w.partial = buf[m-1] != '\n'
		whole = bytes.Count(buf[lead:m], []byte{'\n'})
	}
	w.written.Add(uint64(whole))
	if err != nil {
		w.fail(n-whole, fmt.Errorf("write decision log: %w", err))
	}
}

// openFile opens decisions.log for appending and learns its size.
func (w *Writer) openFile() error {
	path := filepath.Join(w.dir, FileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat decision log: %w", err)
	}
	w.f, w.size = f, st.Size()
	w.partial = st.Size() > 0 && !endsInNewline(path, st.Size())
	return nil
}

// endsInNewline reports whether the file's last byte (at size-1) is a
// newline; when it cannot tell, it says yes.
func endsInNewline(path string, size int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return true
	}
	return last[0] == '\n'
}

// rotate shifts decisions.log to .1, .1 to .2 and so on, drops the
// oldest, and opens a fresh decisions.log.
func (w *Writer) rotate() error {
	if w.f != nil {
		err := w.f.Close()
		w.f = nil
		if err != nil {
			return fmt.Errorf("close decision log for rotation: %w", err)
		}
	}
	base := filepath.Join(w.dir, FileName)
	name := func(i int) string { return base + "." + strconv.Itoa(i) }
	var errs []error
	if w.maxFiles <= 1 {
		if err := os.Remove(base); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	} else {
		if err := os.Remove(name(w.maxFiles - 1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		for i := w.maxFiles - 2; i >= 1; i-- {
			if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if err := os.Rename(base, name(1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := w.openFile(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("rotate decision log: %w", errors.Join(errs...))
	}
	return nil
}
