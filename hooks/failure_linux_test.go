package hooks

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestNetworkInvalidSpec(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")
	before := snapshot(t, outer, allocDir)
	for name, mutate := range map[string]func(*NetworkSpec){
		"host bits":   func(s *NetworkSpec) { s.Pool = netip.MustParsePrefix("10.200.0.1/16") },
		"ipv6 pool":   func(s *NetworkSpec) { s.Pool = netip.MustParsePrefix("fd00::/64") },
		"tiny pool":   func(s *NetworkSpec) { s.Pool = netip.MustParsePrefix("10.200.0.0/31") },
		"no port":     func(s *NetworkSpec) { s.ProxyPort = 0 },
		"no dir":      func(s *NetworkSpec) { s.Dir = filepath.Join(s.Dir, "missing") },
		"bad outer":   func(s *NetworkSpec) { s.OuterNetNS = "/etc/hostname" },
		"no allocdir": func(s *NetworkSpec) { s.AllocDir = "" },
	} {
		spec := egressSpec(t, outer, allocDir)
		mutate(&spec)
		if n, err := SetupNetwork(spec); err == nil {
			t.Errorf("%s: SetupNetwork succeeded: %+v", name, n)
			_ = TeardownNetwork(spec.Dir)
		}
		if _, err := os.Stat(filepath.Join(spec.Dir, stateFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: state file left: %v", name, err)
		}
	}
	checkClean(t, before, snapshot(t, outer, allocDir))
}

func TestNetworkFailureMidway(t *testing.T) {
	requireRoot(t)
	outer := newOuterNetNS(t)
	allocDir := filepath.Join(t.TempDir(), "alloc")

	t.Run("pool exhausted", func(t *testing.T) {
		spec := egressSpec(t, outer, allocDir)
		spec.Pool = netip.MustParsePrefix("10.201.0.0/30")
		mustSetup(t, spec)
		before := snapshot(t, outer, allocDir)
		second := egressSpec(t, outer, allocDir)
		second.Pool = spec.Pool
		if _, err := SetupNetwork(second); err == nil {
			t.Fatal("SetupNetwork with an exhausted pool succeeded")
		}
		checkClean(t, before, snapshot(t, outer, allocDir))
		checkDirEmpty(t, second.Dir)
	})

	t.Run("veth name taken", func(t *testing.T) {
		spec := egressSpec(t, outer, allocDir)
		before := snapshot(t, outer, allocDir)
		name := "moat" + sandboxID(spec.Dir)
		clash := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}, PeerName: "clashpeer", PeerTxQLen: -1}
		inNS(t, outer, func() error { return netlink.LinkAdd(clash) })
		defer inNS(t, outer, func() error { return netlink.LinkDel(clash) })
		if _, err := SetupNetwork(spec); err == nil {
			t.Fatal("SetupNetwork with its veth name taken succeeded")
		}
		after := snapshot(t, outer, allocDir)
		after.links = slicesWithout(slicesWithout(after.links, name), "clashpeer") // not ours to delete
		checkClean(t, before, after)
		checkDirEmpty(t, spec.Dir)
	})
}

// checkDirEmpty fails unless the sandbox directory holds nothing.
func checkDirEmpty(t *testing.T, dir string) {
	t.Helper()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in %s: %v", dir, ents)
	}
}

func slicesWithout(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
