package declog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

func flush(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func rec(i int) Record {
	return Record{
		Time:    time.Date(2026, 11, 27, 8, 0, 0, i, time.UTC),
		Sandbox: "sb",
		Action:  ActionDeny,
		Engine:  EngineOPA,
		Binary:  "/usr/bin/curl",
		PID:     i + 1,
		Host:    "example.com",
		Port:    443,
		Reason:  fmt.Sprintf("record %d", i),
	}
}

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	w.Log(Record{Action: ActionAllow, Engine: EngineOPA, Host: "a.example", Port: 443})
	w.Log(rec(7))
	flush(t, w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want 0750", st.Mode().Perm())
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("read %d records, want 2", len(got))
	}
	if got[0].Time.Before(before.Add(-time.Second)) || got[0].Time.After(time.Now()) {
		t.Errorf("zero time was filled with %v", got[0].Time)
	}
	if !got[1].Time.Equal(rec(7).Time) || got[1].Reason != "record 7" || got[1].PID != 8 {
		t.Errorf("round trip: got %+v", got[1])
	}
	if s := w.Stats(); s.Written != 2 || s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
	w.Log(rec(8))
	if s := w.Stats(); s.Dropped != 1 {
		t.Errorf("a record logged after Close: stats %+v, want one dropped", s)
	}
	if err := w.Flush(context.Background()); err != ErrClosed {
		t.Errorf("Flush after Close: %v", err)
	}
}

func TestRotation(t *testing.T) {
	line := len(mustLine(t, rec(0)))
	for _, files := range []int{1, 2, 4} {
		t.Run(fmt.Sprint(files, "files"), func(t *testing.T) {
			dir := t.TempDir()
			maxSize := int64(3*line + line/2) // three lines per file
			w, err := Open(dir, maxSize, files)
			if err != nil {
				t.Fatal(err)
			}
			const n = 20
			for i := 0; i < n; i++ {
				w.Log(rec(i))
				if i%3 == 0 {
					flush(t, w) // mix single writes and batches
				}
			}
			flush(t, w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != files {
				t.Errorf("%d files kept, want %d", len(entries), files)
			}
			for _, e := range entries {
				info, _ := e.Info()
				if info.Size() > maxSize {
					t.Errorf("%s is %d bytes, cap %d", e.Name(), info.Size(), maxSize)
				}
			}
			got, err := Read(dir)
			if err != nil {
				t.Fatal(err)
			}
			// Files hold 3 lines; the newest holds n%3 (or 3).
			want := 3*(files-1) + (n-1)%3 + 1
			if len(got) != want {
				t.Fatalf("read %d records, want %d", len(got), want)
			}
			for i, r := range got {
				if r.Reason != fmt.Sprintf("record %d", n-want+i) {
					t.Errorf("record %d is %q: order or content lost", i, r.Reason)
				}
			}
		})
	}
}

func mustLine(t *testing.T, r Record) []byte {
	dir := t.TempDir()
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Log(r)
	flush(t, w)
	w.Close()
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, 64<<10, 100)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 400
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := rec(i)
				r.PID = g + 1
				w.Log(r)
				if i%50 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	flush(t, w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s := w.Stats()
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != s.Written || s.Written+s.Dropped != writers*each || s.Failed != 0 {
		t.Fatalf("read %d, stats %+v; want written+dropped = %d", len(got), s, writers*each)
	}
	// Each writer's records stay in its own order.
	last := map[int]int{}
	for _, r := range got {
		var i int
		if _, err := fmt.Sscanf(r.Reason, "record %d", &i); err != nil {
			t.Fatalf("bad record %+v", r)
		}
		if prev, ok := last[r.PID]; ok && i <= prev {
			t.Fatalf("writer %d: record %d after %d", r.PID, i, prev)
		}
		last[r.PID] = i
	}
}

func TestTruncatedLastLine(t *testing.T) {
	dir := t.TempDir()
	good := mustLine(t, rec(1))
	torn := mustLine(t, rec(2))
	content := append(append([]byte{}, good...), torn[:len(torn)/2]...)
	if err := os.WriteFile(filepath.Join(dir, FileName), content, 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Reason != "record 1" {
		t.Fatalf("read %+v, want only record 1", got)
	}

	// A writer opened on the torn file ends the torn line first, so its
	// own records stay whole.
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Log(rec(3))
	flush(t, w)
	w.Close()
	got, _ = Read(dir)
	if len(got) != 2 || got[1].Reason != "record 3" {
		t.Fatalf("after appending: %+v", got)
	}
}

func TestWriteErrorCounted(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Log(rec(1))
	w.Log(rec(2))
	flush(t, w)
	s := w.Stats()
	if s.Failed != 2 || s.Written != 0 || s.LastErr == nil {
		t.Fatalf("stats %+v, want 2 failed with an error", s)
	}
}
