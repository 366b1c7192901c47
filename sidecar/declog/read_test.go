package declog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// follower runs Follow in the background and hands its records over a
// channel.
func follower(t *testing.T, dir string, from int64) (<-chan Record, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Record, 1000)
	errc := make(chan error, 1)
	go func() {
		errc <- Follow(ctx, dir, from, func(r Record) error { out <- r; return nil })
	}()
	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-errc:
			case <-time.After(10 * time.Second):
				stopErr = errors.New("Follow did not return after cancel")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { stop() }) //nolint:errcheck
	return out, stop
}

func expect(t *testing.T, got <-chan Record, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		select {
		case r := <-got:
			if want := fmt.Sprintf("record %d", i); r.Reason != want {
				t.Fatalf("followed %q, want %q", r.Reason, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d never followed", i)
		}
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	line := len(mustLine(t, rec(0)))
	w, err := Open(dir, int64(2*line+line/2), 3) // two lines per file
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 3; i++ {
		w.Log(rec(i))
	}
	flush(t, w)

	old, off, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 3 {
		t.Fatalf("snapshot has %d records", len(old))
	}
	got, stop := follower(t, dir, off)

	// One at a time: Follow sees each rotation.
	for i := 3; i < 8; i++ {
		w.Log(rec(i))
		flush(t, w)
		expect(t, got, i, i+1)
	}
	// Several rotations between two polls: the files rotated past are
	// read too.
	for i := 8; i < 12; i++ {
		w.Log(rec(i))
	}
	flush(t, w)
	expect(t, got, 8, 12)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow returned %v, want context.Canceled", err)
	}
}

func TestFollowFromEnd(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Log(rec(0))
	flush(t, w)
	got, _ := follower(t, dir, -1)
	time.Sleep(2 * followPoll) // Follow has found the end
	w.Log(rec(1))
	flush(t, w)
	expect(t, got, 1, 2)
}

func TestFollowPartialLineAndCallbackError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	full := mustLine(t, rec(0))
	if err := os.WriteFile(path, full[:10], 0o640); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	errc := make(chan error, 1)
	var seen []Record
	go func() {
		errc <- Follow(context.Background(), dir, 0, func(r Record) error {
			seen = append(seen, r)
			return boom
		})
	}()
	time.Sleep(2 * followPoll) // the half line is pending, not emitted
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(full[10:]) //nolint:errcheck
	f.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, boom) {
			t.Fatalf("Follow returned %v, want the callback's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not stop on the callback's error")
	}
	if len(seen) != 1 || seen[0].Reason != "record 0" {
		t.Fatalf("seen %+v", seen)
	}
}

func TestFollowWaitsForFile(t *testing.T) {
	dir := t.TempDir()
	got, _ := follower(t, dir, 0)
	time.Sleep(followPoll)
	w, err := Open(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Log(rec(0))
	flush(t, w)
	expect(t, got, 0, 1)
}

func TestReadMissingDir(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Read of a missing directory: %v", err)
	}
}
