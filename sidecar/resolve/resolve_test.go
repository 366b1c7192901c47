package resolve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFiles(t *testing.T, resolvConf, hosts string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	rc, hf := filepath.Join(dir, "resolv.conf"), filepath.Join(dir, "hosts")
	if err := os.WriteFile(rc, []byte(resolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hf, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return rc, hf
}

func mustAddrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func lookup(t *testing.T, r *Resolver, host string) []netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, host)
	if err != nil {
		t.Fatalf("LookupNetIP(%q): %v", host, err)
	}
	return addrs
}

const hostsFile = `# comment
127.0.0.1	localhost
::1	localhost ip6-localhost
10.9.8.7	Registry.Internal registry  # trailing comment
10.9.8.8	registry.internal
bogus	line
fd00::7	v6only.
`

func TestLiteralsAndHosts(t *testing.T) {
	rc, hf := writeFiles(t, "", hostsFile)
	r, err := New(rc, hf)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want []netip.Addr
	}{
		{"1.2.3.4", mustAddrs("1.2.3.4")},
		{"2001:db8::1", mustAddrs("2001:db8::1")},
		{"[2001:db8::1]", mustAddrs("2001:db8::1")},
		{"localhost", mustAddrs("127.0.0.1", "::1")},
		{"LOCALHOST", mustAddrs("127.0.0.1", "::1")},
		{"registry.internal", mustAddrs("10.9.8.7", "10.9.8.8")},
		{"registry.internal.", mustAddrs("10.9.8.7", "10.9.8.8")},
		{"registry", mustAddrs("10.9.8.7")},
		{"ip6-localhost", mustAddrs("::1")},
		{"v6only", mustAddrs("fd00::7")},
	}
	for _, tt := range tests {
		if got := lookup(t, r, tt.host); !slices.Equal(got, tt.want) {
			t.Errorf("LookupNetIP(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	// No nameservers: names not in the hosts file fail without any query.
	if _, err := r.LookupNetIP(context.Background(), "example.com"); err == nil || !strings.Contains(err.Error(), "no nameservers") {
		t.Fatalf("err = %v, want no nameservers", err)
	}
	for _, bad := range []string{"", "a..b", "a b", "a\x00b", strings.Repeat("a", 64) + ".com", "[::1"} {
		if _, err := r.LookupNetIP(context.Background(), bad); err == nil {
			t.Errorf("LookupNetIP(%q) succeeded", bad)
		}
	}
}

func TestMissingFiles(t *testing.T) {
	dir := t.TempDir()
	r, err := New(filepath.Join(dir, "nope"), filepath.Join(dir, "nope2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, r, "10.0.0.1"); !slices.Equal(got, mustAddrs("10.0.0.1")) {
		t.Fatal(got)
	}
	if _, err := r.LookupNetIP(context.Background(), "localhost"); err == nil {
		t.Fatal("lookup with no files succeeded")
	}
	if _, err := New("", ""); err != nil {
		t.Fatal(err)
	}
}

func TestDNSSearchAndNdots(t *testing.T) {
	srv := newDNSServer(t)
	srv.set(func() { srv.a["api.default.svc.cluster.local."] = mustAddrs("10.96.0.10") })
	srv.set(func() { srv.a["example.com."] = mustAddrs("93.184.215.14") })
	srv.set(func() { srv.aaaa["example.com."] = mustAddrs("2606:2800:21f:cb07:6820:80da:af6b:8b2c") })
	srv.set(func() { srv.a["short."] = mustAddrs("1.2.3.4") })
	rc, hf := writeFiles(t, "nameserver 10.96.0.53\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:1\n", "")
	r, err := New(rc, hf)
	if err != nil {
		t.Fatal(err)
	}
	r.Dial = dialTo(map[string]*dnsServer{"10.96.0.53": srv})

	if got := lookup(t, r, "api"); !slices.Equal(got, mustAddrs("10.96.0.10")) {
		t.Fatalf("api = %v", got)
	}
	// With ndots:5, example.com goes through every search domain first.
	srv.mu.Lock()
	srv.seen = nil
	srv.mu.Unlock()
	got := lookup(t, r, "example.com")
	if !slices.Equal(got, mustAddrs("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")) {
		t.Fatalf("example.com = %v", got)
	}
	var aQueries []string
	for _, q := range srv.queries() {
		if strings.HasSuffix(q, " A") {
			aQueries = append(aQueries, strings.TrimSuffix(q, " A"))
		}
	}
	want := []string{"example.com.default.svc.cluster.local.", "example.com.svc.cluster.local.", "example.com.cluster.local.", "example.com."}
	if !slices.Equal(aQueries, want) {
		t.Fatalf("queries = %v, want %v", aQueries, want)
	}
	// A trailing dot queries only the absolute name.
	srv.mu.Lock()
	srv.seen = nil
	srv.mu.Unlock()
	lookup(t, r, "example.com.")
	if q := srv.queries(); len(q) != 2 || !strings.HasPrefix(q[0], "example.com. ") {
		t.Fatalf("queries = %v", q)
	}
	// A single label not under any search domain falls back to the name itself.
	if got := lookup(t, r, "short"); !slices.Equal(got, mustAddrs("1.2.3.4")) {
		t.Fatalf("short = %v", got)
	}
	_, err = r.LookupNetIP(context.Background(), "missing.example")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("err = %v, want not found", err)
	}
}

func TestNdotsOneAbsoluteFirst(t *testing.T) {
	srv := newDNSServer(t)
	srv.set(func() { srv.a["example.com."] = mustAddrs("93.184.215.14") })
	srv.set(func() { srv.a["example.com.corp.example."] = mustAddrs("10.1.1.1") })
	rc, hf := writeFiles(t, "nameserver 192.0.2.53\ndomain corp.example\n", "")
	r, _ := New(rc, hf)
	r.Dial = dialTo(map[string]*dnsServer{"192.0.2.53": srv})
	if got := lookup(t, r, "example.com"); !slices.Equal(got, mustAddrs("93.184.215.14")) {
		t.Fatalf("example.com = %v", got)
	}
}

func TestCNAMEAndTCPFallback(t *testing.T) {
	srv := newDNSServer(t)
	srv.set(func() { srv.cname["www.example.com."] = "edge.cdn.example." })
	srv.set(func() { srv.a["edge.cdn.example."] = mustAddrs("198.51.100.7", "198.51.100.8") })
	srv.set(func() { srv.a["big.example."] = mustAddrs("203.0.113.1") })
	srv.set(func() { srv.truncate["big.example."] = true })
	rc, hf := writeFiles(t, "nameserver 192.0.2.53\n", "")
	r, _ := New(rc, hf)
	r.Dial = dialTo(map[string]*dnsServer{"192.0.2.53": srv})
	if got := lookup(t, r, "www.example.com"); !slices.Equal(got, mustAddrs("198.51.100.7", "198.51.100.8")) {
		t.Fatalf("www = %v", got)
	}
	if got := lookup(t, r, "big.example"); !slices.Equal(got, mustAddrs("203.0.113.1")) {
		t.Fatalf("big = %v", got)
	}
}

func TestFailoverToSecondServer(t *testing.T) {
	bad := newDNSServer(t)
	bad.servfail.Store(true)
	good := newDNSServer(t)
	good.set(func() { good.a["example.com."] = mustAddrs("93.184.215.14") })
	rc, hf := writeFiles(t, "nameserver 192.0.2.1\nnameserver 192.0.2.2\noptions attempts:1 timeout:1\n", "")
	r, _ := New(rc, hf)
	r.Dial = dialTo(map[string]*dnsServer{"192.0.2.1": bad, "192.0.2.2": good})
	if got := lookup(t, r, "example.com"); !slices.Equal(got, mustAddrs("93.184.215.14")) {
		t.Fatalf("example.com = %v", got)
	}
	// Every server failing is an error, not "not found".
	good.servfail.Store(true)
	_, err := r.LookupNetIP(context.Background(), "example.com")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound || !strings.Contains(err.Error(), "ServerFailure") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnreachableServerTimesOut(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, hf := writeFiles(t, "nameserver 192.0.2.9\noptions timeout:1 attempts:1\n", "")
	r, _ := New(rc, hf)
	r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, pc.LocalAddr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = r.LookupNetIP(ctx, "example.com.")
	if err == nil {
		t.Fatal("lookup succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("lookup took %v despite the context deadline", d)
	}
}

func TestReload(t *testing.T) {
	rc, hf := writeFiles(t, "", "10.0.0.1 app\n")
	r, err := New(rc, hf)
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, r, "app"); !slices.Equal(got, mustAddrs("10.0.0.1")) {
		t.Fatal(got)
	}
	// Explicit reload.
	os.WriteFile(hf, []byte("10.0.0.2 app\n"), 0o644)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, r, "app"); !slices.Equal(got, mustAddrs("10.0.0.2")) {
		t.Fatal(got)
	}
	// Automatic re-read on a changed stamp.
	r.recheck = 0
	os.WriteFile(hf, []byte("10.0.0.33 app\n"), 0o644)
	os.Chtimes(hf, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	if got := lookup(t, r, "app"); !slices.Equal(got, mustAddrs("10.0.0.33")) {
		t.Fatal(got)
	}
}

func TestParseResolvConf(t *testing.T) {
	c, err := parseResolvConf(strings.NewReader(`# generated
; comment
nameserver 127.0.0.11
nameserver ::1
nameserver fe80::1%eth0
nameserver 10.0.0.4
nameserver not-an-ip
search Example.COM. corp
domain ignored.example
search a.example b.example
options ndots:20 timeout:99 attempts:9 rotate use-vc bogus:1
`))
	if err != nil {
		t.Fatal(err)
	}
	if want := mustAddrs("127.0.0.11", "::1", "fe80::1%eth0"); !slices.Equal(c.servers, want) {
		t.Errorf("servers = %v, want %v", c.servers, want)
	}
	if want := []string{"a.example", "b.example"}; !slices.Equal(c.search, want) {
		t.Errorf("search = %v", c.search)
	}
	if c.ndots != 15 || c.timeout != 30*time.Second || c.attempts != 5 || !c.rotate || !c.tcp {
		t.Errorf("options = %+v", c)
	}
	d, _ := parseResolvConf(strings.NewReader("search Example.COM. corp\n"))
	if want := []string{"example.com", "corp"}; !slices.Equal(d.search, want) || d.ndots != 1 || d.attempts != 2 {
		t.Errorf("config = %+v", d)
	}
}

func FuzzLookupHostsAndConf(f *testing.F) {
	f.Add("nameserver 1.1.1.1\nsearch a b\noptions ndots:3\n", "1.2.3.4 a b\n", "a.b")
	f.Fuzz(func(t *testing.T, conf, hosts, name string) {
		c, err := parseResolvConf(strings.NewReader(conf))
		if err != nil {
			return
		}
		if _, err := parseHosts(strings.NewReader(hosts)); err != nil {
			return
		}
		if validName(name) {
			for _, fq := range c.candidates(strings.ToLower(name)) {
				if !strings.HasSuffix(fq, ".") {
					t.Fatalf("candidate %q is not absolute", fq)
				}
			}
		}
	})
}
