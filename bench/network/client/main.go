// Command client is the static program bench/network runs on both ends of
// its measurements: as the upstream server in the testbed's upstream netns,
// and as the client, either inside a sandboxed container (through the
// sidecar's proxy) or in the outer netns (direct, or through Squid).
//
// The upstream protocol is minimal: the client sends an 8-byte big-endian
// count, the server writes that many bytes and closes. The server closes
// first, so TIME_WAIT sockets pile up on listening ports, never on the
// clients' ephemeral ones.
//
//	client serve ADDR
//	client wait ADDR [TIMEOUT]
//	client bulk [-proxy P] -target HOST:PORT [-mib N]
//	client tunnels [-proxy P] -target HOST:PORT [-c N] [-d DUR | -n N] [-bytes N] [-expect CODE]
//
// -proxy is host:port, "env" for $HTTP_PROXY, or empty for a direct
// connection. A -target holding %d gets each tunnel's sequence number.
// bulk and tunnels print one JSON object on stdout.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: client serve|wait|bulk|tunnels ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "wait":
		err = wait(args)
	case "bulk":
		err = bulk(args)
	case "tunnels":
		err = tunnels(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

// serve answers each connection's count with that many bytes.
func serve(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: serve ADDR")
	}
	l, err := net.Listen("tcp", args[0])
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			var hdr [8]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			for n := binary.BigEndian.Uint64(hdr[:]); n > 0; {
				w := min(n, uint64(len(payload)))
				if _, err := c.Write(payload[:w]); err != nil {
					return
				}
				n -= w
			}
		}()
	}
}

// wait dials ADDR until it answers or the timeout passes.
func wait(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: wait ADDR [TIMEOUT]")
	}
	timeout := 10 * time.Second
	if len(args) > 1 {
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		timeout = d
	}
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %v: %w", args[0], timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bulk reads -mib MiB from the upstream through one tunnel and reports
// the rate from the request to the server's close.
func bulk(args []string) error {
	fs := flag.NewFlagSet("bulk", flag.ContinueOnError)
	proxy := fs.String("proxy", "", "proxy host:port, env, or empty for direct")
	target := fs.String("target", "", "upstream host:port")
	mib := fs.Int("mib", 512, "MiB to read")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := proxyAddr(*proxy)
	if err != nil {
		return err
	}
	conn, r, code, err := open(p, *target)
	if err != nil {
		return err
	}
	defer conn.Close()
	if code != 200 {
		return fmt.Errorf("proxy answered %d", code)
	}
	want := uint64(*mib) << 20
	start := time.Now()
	if err := request(conn, want); err != nil {
		return err
	}
	buf := make([]byte, 256<<10)
	var got uint64
	for {
		n, err := r.Read(buf)
		got += uint64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", got, err)
		}
	}
	secs := time.Since(start).Seconds()
	if got != want {
		return fmt.Errorf("read %d bytes, want %d", got, want)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"bytes": float64(got), "seconds": secs, "mbps": float64(got) / secs / 1e6,
	})
}

// tunnelResult is what tunnels prints.
type tunnelResult struct {
	OK         int     `json:"ok"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	PerSec     float64 `json:"per_sec"`
	// Setup is dial to the proxy's answer; Total is dial to the server's
	// close. Each holds p50, p90, p99 and max in microseconds.
	Setup []float64 `json:"setup_us"`
	Total []float64 `json:"total_us"`
}

// tunnels opens tunnels from -c workers, each after the previous one
// closed, for -d or until -n were opened, and reports how many completed
// per second and their latencies.
func tunnels(args []string) error {
	fs := flag.NewFlagSet("tunnels", flag.ContinueOnError)
	proxy := fs.String("proxy", "", "proxy host:port, env, or empty for direct")
	target := fs.String("target", "", "upstream host:port (%d: the tunnel's number)")
	workers := fs.Int("c", 8, "concurrent workers")
	dur := fs.Duration("d", 0, "run for this long")
	count := fs.Int("n", 0, "open this many tunnels (when -d is 0)")
	size := fs.Uint64("bytes", 64, "bytes to fetch through each tunnel")
	expect := fs.Int("expect", 200, "proxy status to expect; other than 200: no exchange")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*dur > 0) == (*count > 0) {
		return errors.New("tunnels: give exactly one of -d and -n")
	}
	p, err := proxyAddr(*proxy)
	if err != nil {
		return err
	}
	var (
		seq          atomic.Int64
		mu           sync.Mutex
		res          tunnelResult
		setup, total []time.Duration
		wg           sync.WaitGroup
	)
	start := time.Now()
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s, t []time.Duration
			ok, bad, firstErr := 0, 0, ""
			for {
				i := seq.Add(1)
				if (*count > 0 && i > int64(*count)) || (*dur > 0 && time.Since(start) >= *dur) {
					break
				}
				host := *target
				if strings.Contains(host, "%d") {
					host = fmt.Sprintf(host, i)
				}
				ds, dt, err := oneTunnel(p, host, *size, *expect)
				if err != nil {
					if bad++; firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				ok++
				s, t = append(s, ds), append(t, dt)
			}
			mu.Lock()
			defer mu.Unlock()
			res.OK += ok
			res.Errors += bad
			if res.FirstError == "" {
				res.FirstError = firstErr
			}
			setup, total = append(setup, s...), append(total, t...)
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.PerSec = float64(res.OK) / res.Seconds
	res.Setup, res.Total = summary(setup), summary(total)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// oneTunnel opens a tunnel, fetches size bytes through it when the proxy
// answers 200, and returns the setup and total times.
func oneTunnel(proxy, target string, size uint64, expect int) (time.Duration, time.Duration, error) {
	t0 := time.Now()
	conn, r, code, err := open(proxy, target)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	t1 := time.Now()
	if code != expect {
		return 0, 0, fmt.Errorf("%s: proxy answered %d, want %d", target, code, expect)
	}
	if code == 200 {
		if err := request(conn, size); err != nil {
			return 0, 0, err
		}
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return 0, 0, fmt.Errorf("read: %w", err)
		}
		if uint64(n) != size {
			return 0, 0, fmt.Errorf("read %d bytes, want %d", n, size)
		}
	}
	return t1.Sub(t0), time.Since(t0), nil
}

// open connects to target, through proxy's CONNECT unless proxy is "",
// and returns the connection, the reader of the tunnel's bytes and the
// proxy's status (200 for a direct connection).
func open(proxy, target string) (net.Conn, io.Reader, int, error) {
	if proxy == "" {
		c, err := net.DialTimeout("tcp", target, 10*time.Second)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("dial %s: %w", target, err)
		}
		return c, c, 200, nil
	}
	c, err := net.DialTimeout("tcp", proxy, 10*time.Second)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("dial proxy %s: %w", proxy, err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		c.Close()
		return nil, nil, 0, fmt.Errorf("send CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(c, 4096)
	status, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, nil, 0, fmt.Errorf("read proxy answer: %w", err)
	}
	f := strings.Fields(status)
	code := 0
	if len(f) > 1 {
		code, _ = strconv.Atoi(f[1])
	}
	if code == 0 {
		c.Close()
		return nil, nil, 0, fmt.Errorf("proxy answer %q", status)
	}
	for { // the rest of the head
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, 0, fmt.Errorf("read proxy answer: %w", err)
		}
		if line == "\r\n" || line == "\n" {
			break
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, br, code, nil
}

// request asks the server for n bytes.
func request(c net.Conn, n uint64) error {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], n)
	if _, err := c.Write(hdr[:]); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	return nil
}

// proxyAddr turns -proxy into host:port.
func proxyAddr(p string) (string, error) {
	if p != "env" {
		return p, nil
	}
	v := os.Getenv("HTTP_PROXY")
	if v == "" {
		v = os.Getenv("http_proxy")
	}
	if v == "" {
		return "", errors.New("-proxy env: HTTP_PROXY is not set")
	}
	v = strings.TrimPrefix(v, "http://")
	return strings.TrimSuffix(v, "/"), nil
}

// summary is p50, p90, p99 and max of d in microseconds.
func summary(d []time.Duration) []float64 {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	return []float64{at(0.50), at(0.90), at(0.99), at(1)}
}
