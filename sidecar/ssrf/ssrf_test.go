package ssrf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr   string
		kind   string
		always bool
	}{
		// IPv4 special-purpose ranges.
		{"0.0.0.0", KindUnspecified, true},
		{"0.1.2.3", KindUnspecified, true},
		{"127.0.0.1", KindLoopback, true},
		{"127.255.255.254", KindLoopback, true},
		{"10.0.0.1", KindPrivate, false},
		{"10.255.255.255", KindPrivate, false},
		{"172.16.0.1", KindPrivate, false},
		{"172.31.255.255", KindPrivate, false},
		{"192.168.1.1", KindPrivate, false},
		{"169.254.169.254", KindLinkLocal, true},
		{"169.254.0.1", KindLinkLocal, true},
		{"100.64.0.1", KindCGNAT, false},
		{"100.127.255.255", KindCGNAT, false},
		{"192.0.0.8", KindProtocol, false},
		{"198.18.0.1", KindBenchmark, false},
		{"198.19.255.255", KindBenchmark, false},
		{"224.0.0.1", KindMulticast, true},
		{"239.255.255.250", KindMulticast, true},
		{"240.0.0.1", KindReserved, false},
		{"255.255.255.254", KindReserved, false},
		{"255.255.255.255", KindBroadcast, true},
		// IPv4 neighbours of those ranges are public.
		{"8.8.8.8", "", false},
		{"1.1.1.1", "", false},
		{"11.0.0.1", "", false},
		{"172.15.255.255", "", false},
		{"172.32.0.1", "", false},
		{"100.63.255.255", "", false},
		{"100.128.0.1", "", false},
		{"169.253.255.255", "", false},
		{"192.0.1.1", "", false},
		{"198.17.255.255", "", false},
		{"198.20.0.1", "", false},
		{"223.255.255.255", "", false},
		// IPv6 ranges.
		{"::", KindUnspecified, true},
		{"::1", KindLoopback, true},
		{"fe80::1", KindLinkLocal, true},
		{"fe80::1%eth0", KindLinkLocal, true},
		{"febf::1", KindLinkLocal, true},
		{"fec0::1", KindSiteLocal, false},
		{"fc00::1", KindUniqueLocal, false},
		{"fd12:3456::1", KindUniqueLocal, false},
		{"ff02::1", KindMulticast, true},
		{"ff05::2", KindMulticast, true},
		{"64:ff9b:1::1", KindLocalNAT64, false},
		{"2606:4700:4700::1111", "", false},
		{"2001:4860:4860::8888", "", false},
		// IPv4-mapped.
		{"::ffff:127.0.0.1", KindLoopback, true},
		{"::ffff:10.1.2.3", KindPrivate, false},
		{"::ffff:169.254.169.254", KindLinkLocal, true},
		{"::ffff:8.8.8.8", "", false},
		// IPv4-compatible and SIIT.
		{"::127.0.0.1", KindLoopback, true},
		{"::ffff:0:10.0.0.1", KindPrivate, false},
		{"::8.8.8.8", "", false},
		// NAT64 well-known prefix.
		{"64:ff9b::7f00:1", KindLoopback, true},
		{"64:ff9b::a9fe:a9fe", KindLinkLocal, true},
		{"64:ff9b::c0a8:101", KindPrivate, false},
		{"64:ff9b::808:808", "", false},
		// 6to4: the IPv4 address is bits 16-47.
		{"2002:7f00:1::1", KindLoopback, true},
		{"2002:a00:1::", KindPrivate, false},
		{"2002:a9fe:a9fe::1", KindLinkLocal, true},
		{"2002:808:808::1", "", false},
		// Teredo: the client address is the inverted last 32 bits.
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", KindLoopback, true}, // ^7f000001
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", KindPrivate, false}, // ^0a000001
		{"2001:0:4136:e378:8000:63bf:5601:fef6", KindLinkLocal, true},
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", "", false}, // ^08080808
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		kind, always := Classify(a)
		if kind != tt.kind || always != tt.always {
			t.Errorf("Classify(%s) = %q, %v; want %q, %v", tt.addr, kind, always, tt.kind, tt.always)
		}
	}
}

func TestEmbedded(t *testing.T) {
	tests := []struct{ in, want string }{
		{"::ffff:1.2.3.4", "1.2.3.4"},
		{"64:ff9b::102:304", "1.2.3.4"},
		{"2002:102:304::", "1.2.3.4"},
		{"2001:0:4136:e378:8000:63bf:fefd:fcfb", "1.2.3.4"},
		{"::ffff:0:102:304", "1.2.3.4"},
	}
	for _, tt := range tests {
		got, ok := Embedded(netip.MustParseAddr(tt.in))
		if !ok || got != netip.MustParseAddr(tt.want) {
			t.Errorf("Embedded(%s) = %v, %v; want %s", tt.in, got, ok, tt.want)
		}
	}
	for _, s := range []string{"1.2.3.4", "2606:4700::1", "fe80::1"} {
		if got, ok := Embedded(netip.MustParseAddr(s)); ok {
			t.Errorf("Embedded(%s) = %v, want none", s, got)
		}
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestCheck(t *testing.T) {
	g := &Guard{LocalAddrs: func() []netip.Addr { return addrs("10.200.0.1", "fd00::1") }}
	tests := []struct {
		name    string
		host    string
		port    uint16
		addrs   []netip.Addr
		allowed []string
		want    string // the address to dial, or "" for a refusal
		reason  string // a substring of the refusal
	}{
		{"public", "example.com", 443, addrs("93.184.215.14"), nil, "93.184.215.14", ""},
		{"public first of many", "example.com", 443, addrs("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"), nil, "93.184.215.14", ""},
		{"mapped is unmapped", "example.com", 443, addrs("::ffff:93.184.215.14"), nil, "93.184.215.14", ""},
		{"loopback", "localhost", 80, addrs("127.0.0.1"), nil, "", "localhost resolves to internal address 127.0.0.1, connection rejected"},
		{"metadata", "169.254.169.254", 80, addrs("169.254.169.254"), nil, "", "169.254.169.254 resolves to internal address 169.254.169.254, connection rejected"},
		{"literal loopback", "127.0.0.1", 80, addrs("127.0.0.1"), nil, "", "resolves to internal address 127.0.0.1"},
		{"private name", "db.internal", 5432, addrs("10.0.0.5"), nil, "", "db.internal resolves to internal address 10.0.0.5, connection rejected"},
		{"any internal denies", "mixed.example", 443, addrs("93.184.215.14", "10.0.0.5"), nil, "", "internal address 10.0.0.5"},
		{"cgnat", "x", 443, addrs("100.100.100.100"), nil, "", "internal address"},
		{"nat64 loopback", "x", 443, addrs("64:ff9b::7f00:1"), nil, "", "internal address 64:ff9b::7f00:1"},
		{"6to4 private", "x", 443, addrs("2002:c0a8:101::1"), nil, "", "internal address"},
		{"teredo private", "x", 443, addrs("2001:0:4136:e378:8000:63bf:f5ff:fffe"), nil, "", "internal address"},
		{"ula", "x", 443, addrs("fd00::5"), nil, "", "internal address fd00::5"},
		{"no addresses", "x", 443, nil, nil, "", "x resolved to no addresses"},
		{"etcd", "example.com", 2379, addrs("93.184.215.14"), nil, "", "port 2379 is always blocked"},
		{"etcd peer", "example.com", 2380, addrs("93.184.215.14"), nil, "", "port 2380 is always blocked"},
		{"apiserver with allowed_ips", "10.0.0.1", 6443, addrs("10.0.0.1"), []string{"10.0.0.0/8"}, "", "port 6443 is always blocked"},
		{"kubelet", "example.com", 10250, addrs("93.184.215.14"), nil, "", "port 10250 is always blocked"},
		{"kubelet ro", "example.com", 10255, addrs("93.184.215.14"), nil, "", "port 10255 is always blocked"},
		// allowed_ips mode.
		{"allowed cidr", "db.internal", 5432, addrs("10.0.5.7"), []string{"10.0.5.0/24"}, "10.0.5.7", ""},
		{"allowed single", "db.internal", 5432, addrs("10.0.5.7"), []string{"10.0.5.7"}, "10.0.5.7", ""},
		{"allowed mapped entry", "db.internal", 5432, addrs("10.0.5.7"), []string{"::ffff:10.0.5.0/120"}, "10.0.5.7", ""},
		{"allowed public", "example.com", 443, addrs("93.184.215.14"), []string{"93.184.215.0/24"}, "93.184.215.14", ""},
		{"outside allowed", "db.internal", 5432, addrs("10.0.6.7"), []string{"10.0.5.0/24"}, "", "db.internal resolves to 10.0.6.7, which is not in allowed_ips, connection rejected"},
		{"public outside allowed", "example.com", 443, addrs("93.184.215.14"), []string{"10.0.0.0/8"}, "", "which is not in allowed_ips"},
		{"every address must be allowed", "db.internal", 5432, addrs("10.0.5.7", "10.9.9.9"), []string{"10.0.5.0/24"}, "", "10.9.9.9, which is not in allowed_ips"},
		{"allowed loopback stays blocked", "127.0.0.1", 80, addrs("127.0.0.1"), []string{"127.0.0.0/8"}, "", "always-blocked loopback address 127.0.0.1"},
		{"allowed link-local stays blocked", "md", 80, addrs("169.254.169.254"), []string{"169.254.0.0/16"}, "", "always-blocked link-local address"},
		{"allowed everything, metadata blocked", "md", 80, addrs("169.254.169.254"), []string{"0.0.0.0/0"}, "", "always-blocked"},
		{"allowed unspecified blocked", "z", 80, addrs("0.0.0.0"), []string{"0.0.0.0/0"}, "", "always-blocked unspecified"},
		{"allowed multicast blocked", "m", 80, addrs("ff02::1"), []string{"::/0"}, "", "always-blocked multicast"},
		{"allowed mapped loopback blocked", "m", 80, addrs("::ffff:127.0.0.1"), []string{"::/0", "0.0.0.0/0"}, "", "always-blocked loopback address 127.0.0.1"},
		{"allowed nat64 loopback blocked", "m", 80, addrs("64:ff9b::7f00:1"), []string{"64:ff9b::/96"}, "", "always-blocked loopback"},
		{"invalid entry", "db", 5432, addrs("10.0.5.7"), []string{"10.0.5.0/33"}, "", `invalid allowed_ips entry "10.0.5.0/33"`},
		{"invalid entry word", "db", 5432, addrs("10.0.5.7"), []string{"everything"}, "", "invalid allowed_ips entry"},
		// A literal-IP host implies allowed_ips of itself.
		{"literal private implicit", "10.200.0.2", 19876, addrs("10.200.0.2"), nil, "10.200.0.2", ""},
		{"literal private bracketed v6", "[fd00::2]", 80, addrs("fd00::2"), nil, "fd00::2", ""},
		{"literal v6 ula", "fd00::2", 80, addrs("fd00::2"), nil, "fd00::2", ""},
		{"literal public", "8.8.8.8", 53, addrs("8.8.8.8"), nil, "8.8.8.8", ""},
		{"literal metadata not implicit", "169.254.169.254", 80, addrs("169.254.169.254"), nil, "", "internal address"},
		{"explicit list wins over literal", "10.200.0.2", 80, addrs("10.200.0.2"), []string{"10.1.0.0/16"}, "", "not in allowed_ips"},
		// The sidecar's own addresses, in both modes.
		{"own address", "10.200.0.1", 3128, addrs("10.200.0.1"), nil, "", "an address of the sandbox proxy itself"},
		{"own address allowed_ips", "gw", 22, addrs("10.200.0.1"), []string{"10.200.0.0/24"}, "", "an address of the sandbox proxy itself"},
		{"own v6 address", "gw", 22, addrs("fd00::1"), []string{"fd00::/64"}, "", "an address of the sandbox proxy itself"},
		{"neighbour of own address", "peer", 19876, addrs("10.200.0.2"), []string{"10.200.0.0/24"}, "10.200.0.2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := g.Check(tt.host, tt.port, tt.addrs, tt.allowed)
			if tt.want != "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if got != netip.MustParseAddr(tt.want) {
					t.Fatalf("Check = %s, want %s", got, tt.want)
				}
				return
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("Check = %v, %v; want *Error", got, err)
			}
			if !strings.Contains(se.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", se.Reason, tt.reason)
			}
			if got.IsValid() {
				t.Fatalf("refusal returned address %s", got)
			}
		})
	}
}

func TestCheckNilGuard(t *testing.T) {
	var g *Guard
	if _, err := g.Check("example.com", 443, addrs("1.1.1.1"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Check("x", 443, addrs("127.0.0.1"), nil); err == nil {
		t.Fatal("nil guard allowed loopback")
	}
}

func TestErrorAddr(t *testing.T) {
	_, err := (&Guard{}).Check("x", 80, addrs("1.1.1.1", "10.1.1.1"), nil)
	var se *Error
	if !errors.As(err, &se) || se.Addr != netip.MustParseAddr("10.1.1.1") {
		t.Fatalf("err = %#v, want Addr 10.1.1.1", err)
	}
}

func FuzzCheck(f *testing.F) {
	f.Add("example.com", uint16(443), []byte{127, 0, 0, 1}, "10.0.0.0/8")
	f.Add("[::1]", uint16(80), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, "::/0")
	f.Fuzz(func(t *testing.T, host string, port uint16, raw []byte, allowed string) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		got, err := (&Guard{}).Check(host, port, []netip.Addr{a}, strings.Split(allowed, ","))
		if err == nil {
			if kind, always := Classify(got); always {
				t.Fatalf("allowed always-blocked %s (%s)", got, kind)
			}
		}
	})
}
