package declog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// followPoll is how often Follow looks for new lines. Follow serves a user
// command (`moat denials -f`), never the start path, so polling is fine.
const followPoll = 100 * time.Millisecond

// Read returns every record in dir's decision log, oldest file first. A
// last line without its newline (a write in progress or torn by a crash)
// and lines that are not records are skipped.
func Read(dir string) ([]Record, error) {
	recs, _, err := Snapshot(dir)
	return recs, err
}

// Snapshot is Read that also returns the offset in decisions.log just past
// the last complete line: Follow(ctx, dir, offset, fn) then continues
// exactly where the snapshot ended.
func Snapshot(dir string) ([]Record, int64, error) {
	rotated, err := rotatedFiles(dir)
	if err != nil {
		return nil, 0, err
	}
	var recs []Record
	emit := func(r Record) error { recs = append(recs, r); return nil }
	for _, path := range rotated {
		if _, err := readFrom(path, 0, emit); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, 0, err
		}
	}
	off, err := readFrom(filepath.Join(dir, FileName), 0, emit)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	return recs, off, nil
}

// rotatedFiles lists dir's FileName.N files, the oldest (highest N)
// first.
func rotatedFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read decision log directory: %w", err)
	}
	type numbered struct {
		n    int
		path string
	}
	var files []numbered
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), FileName+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n < 1 || e.IsDir() {
			continue
		}
		files = append(files, numbered{n, filepath.Join(dir, e.Name())})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].n > files[j].n })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out, nil
}

// readFrom calls fn for each complete record line of the file from offset
// off on, and returns the offset past the last complete line.
func readFrom(path string, off int64, fn func(Record) error) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return off, fmt.Errorf("open decision log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, fmt.Errorf("seek decision log %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return off, nil // a torn or unfinished last line is skipped
		}
		if err != nil {
			return off, fmt.Errorf("read decision log %s: %w", path, err)
		}
		off += int64(len(line))
		if err := emitLine(line, fn); err != nil {
			return off, err
		}
	}
}

// emitLine decodes one line and passes it to fn; a line that is not a
// record is skipped.
func emitLine(line []byte, fn func(Record) error) error {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil
	}
	var r Record
	if json.Unmarshal(line, &r) != nil {
		return nil
	}
	return fn(r)
}

// Follow calls fn for each record appended to dir's decisions.log from
// byte offset from on (a negative from: from the file's end at the call),
// following the log across rotations, until ctx ends (it returns
// ctx.Err()) or fn returns an error (returned as it is). When the file is
// shorter than from it was rotated since the offset was taken, and Follow
// finishes the rotated file first.
func Follow(ctx context.Context, dir string, from int64, fn func(Record) error) error {
	t := &tailer{path: filepath.Join(dir, FileName), fn: fn}
	if err := t.start(from); err != nil {
		return err
	}
	defer t.close()
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		if err := t.poll(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// tailer follows one path whose file is replaced on rotation.
type tailer struct {
	path    string
	fn      func(Record) error
	f       *os.File // nil while the path does not exist
	pending []byte   // a line not finished yet
	chunk   []byte
}

func (t *tailer) start(from int64) error {
	if err := t.open(); err != nil || t.f == nil {
		return err
	}
	st, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat decision log: %w", err)
	}
	switch {
	case from < 0 || from == st.Size():
		_, err = t.f.Seek(0, io.SeekEnd)
	case from < st.Size():
		_, err = t.f.Seek(from, io.SeekStart)
	default:
		// Rotated since the offset was taken: the rest is in .1 when
		// that file is long enough.
		older := t.path + ".1"
		if ost, serr := os.Stat(older); serr == nil && ost.Size() >= from {
			if _, err := readFrom(older, from, t.fn); err != nil {
				return err
			}
		}
	}
	if err != nil {
		return fmt.Errorf("seek decision log: %w", err)
	}
	return nil
}

func (t *tailer) open() error {
	f, err := os.Open(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open decision log: %w", err)
	}
	t.f, t.pending = f, t.pending[:0]
	return nil
}

func (t *tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// poll reads what was appended and, when the path now names another file,
// finishes the old one, reads any file rotated past in between, and moves
// on to the new one.
func (t *tailer) poll() error {
	if t.f == nil {
		if err := t.open(); err != nil || t.f == nil {
			return err
		}
	}
	if err := t.drain(); err != nil {
		return err
	}
	cur, err := os.Stat(t.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat decision log: %w", err)
	}
	old, oerr := t.f.Stat()
	if oerr == nil && cur != nil && os.SameFile(cur, old) {
		if pos, err := t.f.Seek(0, io.SeekCurrent); err == nil && cur.Size() < pos {
			// Truncated in place: start over.
			_, _ = t.f.Seek(0, io.SeekStart)
			t.pending = t.pending[:0]
		}
		return nil
	}
	// Rotated: whatever the writer put in the old file is there now.
	if err := t.drain(); err != nil {
		return err
	}
	t.close()
	if oerr == nil {
		if err := t.readSkipped(old); err != nil {
			return err
		}
	}
	if err := t.open(); err != nil || t.f == nil {
		return err
	}
	return t.drain()
}

// readSkipped reads in full the files rotated after old and before the
// current one: when old is now .k, those are .k-1 down to .1.
func (t *tailer) readSkipped(old os.FileInfo) error {
	for k := 1; k <= 64; k++ {
		st, err := os.Stat(t.path + "." + strconv.Itoa(k))
		if err != nil {
			return nil // old was dropped or never rotated: nothing to add
		}
		if !os.SameFile(st, old) {
			continue
		}
		for i := k - 1; i >= 1; i-- {
			if _, err := readFrom(t.path+"."+strconv.Itoa(i), 0, t.fn); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	return nil
}

// drain reads the open file to its end, emitting complete lines.
func (t *tailer) drain() error {
	if t.chunk == nil {
		t.chunk = make([]byte, 64<<10)
	}
	for {
		n, err := t.f.Read(t.chunk)
		data := t.chunk[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				t.pending = append(t.pending, data...)
				break
			}
			line := data[:i+1]
			if len(t.pending) > 0 {
				line = append(t.pending, line...)
				t.pending = t.pending[:0]
			}
			if err := emitLine(line, t.fn); err != nil {
				return err
			}
			data = data[i+1:]
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read decision log: %w", err)
		}
	}
}
