package hooks

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestNetworkStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []*Network{
		{InnerPath: filepath.Join(dir, InnerNetNSFile), InnerInode: 4026532000, Ready: true},
		{
			InnerPath: filepath.Join(dir, InnerNetNSFile), InnerInode: 4026532001,
			OuterPath: filepath.Join(dir, outerPinFile), OuterInode: 4026531840,
			VethOuter: "moat0123abcd", VethInner: "eth0",
			OuterAddr: netip.MustParsePrefix("10.200.0.1/30"), InnerAddr: netip.MustParsePrefix("10.200.0.2/30"),
			Proxy: netip.MustParseAddrPort("10.200.0.1:3128"), MTU: 1500, Table: "moat_0123abcd",
			Alloc: "/run/moat/alloc/4026531840/10.200.0.0", AllocNS: "/run/moat/alloc/4026531840",
			Egress: true, Ready: true,
		},
	} {
		if err := writeState(dir, n); err != nil {
			t.Fatal(err)
		}
		got, err := LoadNetwork(dir)
		if err != nil || !reflect.DeepEqual(got, n) {
			t.Errorf("LoadNetwork = %+v, %v; want %+v", got, err, n)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, stateFile))
	if !strings.Contains(string(data), `"proxy": "10.200.0.1:3128"`) {
		t.Errorf("state file: %s", data)
	}
	if err := writeState(dir, &Network{InnerPath: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNetwork(dir); err == nil {
		t.Error("LoadNetwork accepted an unfinished setup")
	}
	if err := removeState(dir); err != nil {
		t.Fatal(err)
	}
	if err := removeState(dir); err != nil {
		t.Errorf("second removeState: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left: %v", ents)
	}
}
