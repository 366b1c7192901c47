package hooks

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTeardownAfterCrash stops a setup after each of its steps, as a kill -9
// would (no undo runs, every file descriptor closes), and checks that
// TeardownNetwork, twice, leaves nothing behind.
func TestTeardownAfterCrash(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, outer, allocDir)
	for _, egress := range []bool{true, false} {
		spec := egressSpec(t, outer, allocDir)
		spec.Egress = egress
		probe, err := newSetup(spec)
		if err != nil {
			t.Fatal(err)
		}
		steps := probe.steps()
		for k := 1; k < len(steps); k++ {
			spec.Dir = t.TempDir()
			s, err := newSetup(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.run(k); err != nil {
				t.Fatalf("egress %v, %d steps: %v", egress, k, err)
			}
			s.close()
			if _, err := LoadNetwork(spec.Dir); err == nil {
				t.Errorf("egress %v, after %s: LoadNetwork accepts an unfinished setup", egress, steps[k-1].name)
			}
			for range 2 {
				if err := TeardownNetwork(spec.Dir); err != nil {
					t.Errorf("egress %v, after %s: TeardownNetwork: %v", egress, steps[k-1].name, err)
				}
			}
			checkClean(t, before, snapshot(t, outer, allocDir))
			checkDirEmpty(t, spec.Dir)
		}
	}
	checkThreads(t)
}

// TestTeardownLeftovers covers crashes inside a step: pin files created
// but never mounted, a torn temporary state file, an allocation made just
// before the state recorded it, and no state file at all.
func TestTeardownLeftovers(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, outer, allocDir)

	spec := egressSpec(t, outer, allocDir)
	s, err := newSetup(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.run(1); err != nil { // the plan only
		t.Fatal(err)
	}
	s.close()
	if _, _, err := allocate(s.n.AllocNS, spec.Pool, s.dir, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{InnerNetNSFile, outerPinFile, "." + stateFile + ".tmp"} {
		if err := os.WriteFile(filepath.Join(spec.Dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := TeardownNetwork(spec.Dir); err != nil {
		t.Errorf("TeardownNetwork: %v", err)
	}
	checkClean(t, before, snapshot(t, outer, allocDir))
	checkDirEmpty(t, spec.Dir)

	// No state at all: a pinned inner netns is still found by its name.
	dir := t.TempDir()
	if err := NewNetNS(filepath.Join(dir, InnerNetNSFile)); err != nil {
		t.Fatal(err)
	}
	if err := TeardownNetwork(dir); err != nil {
		t.Errorf("TeardownNetwork without state: %v", err)
	}
	checkClean(t, before, snapshot(t, outer, allocDir))
	checkDirEmpty(t, dir)
}

// BenchmarkSetupTeardown reports the time of one SetupNetwork and one
// TeardownNetwork, with and without egress, on a private outer netns.
func BenchmarkSetupTeardown(b *testing.B) {
	requireRoot(b)
	outer := newOuterNetNS(b)
	allocDir := filepath.Join(b.TempDir(), "alloc")
	for _, egress := range []bool{true, false} {
		name := "egress"
		if !egress {
			name = "no-egress"
		}
		b.Run(name, func(b *testing.B) {
			spec := egressSpec(b, outer, allocDir)
			spec.Egress = egress
			var setup, teardown time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := SetupNetwork(spec); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := TeardownNetwork(spec.Dir); err != nil {
					b.Fatal(err)
				}
				setup += mid.Sub(start)
				teardown += time.Since(mid)
			}
			b.ReportMetric(float64(setup.Microseconds())/1000/float64(b.N), "ms/setup")
			b.ReportMetric(float64(teardown.Microseconds())/1000/float64(b.N), "ms/teardown")
		})
	}
}
