package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// squidPort is where Squid listens in the outer netns.
const squidPort = 3129

// squidConfig is an ACL equivalent to the sandbox's policy: CONNECT to
// the upstream's address and port only, everything else refused; no
// cache, one access log line per request (the sidecar logs every
// decision), and every file in dir.
//
// Its hosts file names the testbed's two addresses. Squid looks up the
// name of each client's address (a PTR query), and the testbed has no DNS
// server: every lookup then waited out dns_timeout (30 s), and the
// waiting ones made each new connection dearer, from about 300 us of
// Squid's CPU per tunnel to over 3 ms and back every 30-35 s.
func squidConfig(dir, listen, upIP string, upPort int) string {
	return fmt.Sprintf(`# Written by bench/network.
http_port %[1]s:%[2]d
acl bench_connect method CONNECT
acl bench_upstream dst %[3]s/32
acl bench_port port %[4]d
http_access allow bench_connect bench_upstream bench_port
http_access deny all
cache deny all
cache_mem 8 MB
pid_filename %[5]s/squid.pid
cache_log %[5]s/cache.log
access_log stdio:%[5]s/access.log
cache_store_log none
logfile_rotate 0
coredump_dir %[5]s
netdb_filename none
pinger_enable off
dns_nameservers 127.0.0.1
hosts_file %[5]s/hosts
shutdown_lifetime 0 seconds
`, listen, squidPort, upIP, upPort, dir)
}

// startSquid runs `squid -N` with a generated configuration in the outer
// netns and waits until it accepts connections. Squid drops to the proxy
// user, so its directory is a fresh one that user owns; the caller
// removes it.
func startSquid(b *testbed, client string, upPort int) (*daemon, string, error) {
	bin, err := exec.LookPath("squid")
	if err != nil {
		return nil, "", fmt.Errorf("squid not installed (apt-get install squid): %w", err)
	}
	dir, err := os.MkdirTemp("", "moat-bench-squid-")
	if err != nil {
		return nil, "", err
	}
	if u, err := user.Lookup("proxy"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, dir, fmt.Errorf("squid directory: %w", err)
		}
	}
	hosts := fmt.Sprintf("%s bench-client\n%s bench-upstream\n", b.outerIP, b.upIP)
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return nil, dir, fmt.Errorf("squid hosts file: %w", err)
	}
	conf := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(conf, []byte(squidConfig(dir, b.outerIP, b.upIP, upPort)), 0o644); err != nil {
		return nil, dir, fmt.Errorf("squid config: %w", err)
	}
	d, err := startDaemon("squid", in(b.outer, bin, "-N", "-f", conf), filepath.Join(dir, "squid.out"))
	if err != nil {
		return nil, dir, err
	}
	addr := fmt.Sprintf("%s:%d", b.outerIP, squidPort)
	if _, err := output(os.TempDir(), 20*time.Second, in(b.outer, client, "wait", addr, "15s")); err != nil {
		d.stop(5 * time.Second)
		log, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
		return nil, dir, fmt.Errorf("squid did not start: %w\n%s", err, tail(string(log), 2000))
	}
	return d, dir, nil
}

// squidVersion is the first line of `squid -v`.
func squidVersion() string {
	out, err := exec.Command("squid", "-v").Output()
	if err != nil {
		return "squid"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return "Squid " + strings.TrimPrefix(line, "Squid Cache: Version ")
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
