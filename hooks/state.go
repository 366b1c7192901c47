package hooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// Files in a sandbox's state directory that the network step owns.
const (
	// InnerNetNSFile is where the inner network namespace is pinned (an
	// nsfs bind mount).
	InnerNetNSFile = "netns"
	// outerPinFile pins the outer network namespace, so that teardown can
	// enter it even after the engine's path to it is gone.
	outerPinFile = "netns.outer"
	// stateFile is the JSON form of Network.
	stateFile = "network.json"
)

// Network is a sandbox's network namespace step as SetupNetwork left it;
// Dir/network.json holds it. A state file with Ready false is a plan
// written before any step ran: TeardownNetwork reads it after a crash to
// find whatever was made.
type Network struct {
	InnerPath  string `json:"inner_path"`            // the inner netns pin (Dir/netns)
	InnerInode uint64 `json:"inner_inode,omitempty"` // its nsfs inode
	OuterPath  string `json:"outer_path,omitempty"`  // the outer netns pin (Dir/netns.outer), egress only
	OuterInode uint64 `json:"outer_inode,omitempty"`

	VethOuter string       `json:"veth_outer,omitempty"` // the veth's name in the outer netns
	VethInner string       `json:"veth_inner,omitempty"` // its peer's name in the inner netns
	OuterAddr netip.Prefix `json:"outer_addr,omitzero"`  // e.g. 10.200.0.1/30
	InnerAddr netip.Prefix `json:"inner_addr,omitzero"`  // e.g. 10.200.0.2/30
	// Proxy is where the sidecar listens: OuterAddr's address and the
	// proxy port. Zero without egress.
	Proxy netip.AddrPort `json:"proxy,omitzero"`
	MTU   int            `json:"mtu,omitempty"`

	// Table is the outer netns's nftables table (family inet); the inner
	// netns's is always InnerTable.
	Table string `json:"table,omitempty"`
	// Alloc is the allocator file of the /30; AllocNS the allocator
	// directory of the outer netns, where teardown looks for an allocation
	// made just before a crash.
	Alloc   string `json:"alloc,omitempty"`
	AllocNS string `json:"alloc_ns,omitempty"`

	Egress bool `json:"egress"`
	// OuterDisposable: the outer netns goes away with the sandbox
	// (NetworkSpec.OuterDisposable).
	OuterDisposable bool `json:"outer_disposable,omitempty"`
	Ready           bool `json:"ready"` // every step is done
}

// LoadNetwork reads the network state of the sandbox in dir.
func LoadNetwork(dir string) (*Network, error) {
	n, err := readState(dir)
	if err != nil {
		return nil, err
	}
	if !n.Ready {
		return nil, fmt.Errorf("network of %s: setup did not finish", dir)
	}
	return n, nil
}

// readState reads Dir/network.json, ready or not.
func readState(dir string) (*Network, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("read network state: %w", err)
	}
	n := &Network{}
	if err := json.Unmarshal(data, n); err != nil {
		return nil, fmt.Errorf("read network state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return n, nil
}

// writeState replaces Dir/network.json atomically (a whole old or a whole
// new file, whatever kills the writer).
func writeState(dir string, n *Network) error {
	data, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	tmp := filepath.Join(dir, "."+stateFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write network state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write network state: %w", err)
	}
	return nil
}

// removeState removes the state file and a temporary one a crash left.
func removeState(dir string) error {
	_ = os.Remove(filepath.Join(dir, "."+stateFile+".tmp"))
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network state: %w", err)
	}
	return nil
}
