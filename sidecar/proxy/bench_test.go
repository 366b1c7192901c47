package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// sinkServer reads each connection to EOF and answers with the byte count.
func sinkServer(b *testing.B) string {
	return serveConns(b, func(c net.Conn) {
		// Large reads: io.Discard's 8 KiB buffer would make the sink the
		// bottleneck.
		n, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{c}, make([]byte, 1<<20))
		binary.Write(c, binary.BigEndian, n)
	}).String()
}

// BenchmarkConnectThroughput pushes 1 MiB per iteration through one
// connection, straight to a loopback sink ("direct") and through a
// CONNECT tunnel ("tunnel"); compare their MB/s.
func BenchmarkConnectThroughput(b *testing.B) {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	run := func(b *testing.B, c *net.TCPConn) {
		b.SetBytes(chunk)
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.CloseWrite()
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if n != int64(b.N)*chunk {
			b.Fatalf("sink got %d bytes, want %d", n, int64(b.N)*chunk)
		}
	}
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", sinkServer(b))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c.(*net.TCPConn))
	})
	b.Run("tunnel", func(b *testing.B) {
		addr := sinkServer(b)
		_, port, _ := net.SplitHostPort(addr)
		h := start(b, nil)
		target := "echo.test:" + port
		h.dec.set(target, allowed("bench"))
		c := openTunnel(b, h, target)
		defer c.Close()
		run(b, c)
	})
}

func openTunnel(b *testing.B, h *harness, target string) *net.TCPConn {
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		b.Fatal(err)
	}
	io.WriteString(c, connectReq(target))
	resp := make([]byte, len(established))
	if _, err := io.ReadFull(c, resp); err != nil || string(resp) != string(established) {
		b.Fatalf("CONNECT: %q %v", resp, err)
	}
	return c.(*net.TCPConn)
}

// BenchmarkNewTunnels opens a tunnel, sends one byte through it and back,
// and closes it, one after another; reported as tunnels/s.
func BenchmarkNewTunnels(b *testing.B) {
	_, port := echoServer(b)
	h := start(b, nil)
	target := fmt.Sprintf("echo.test:%d", port)
	h.dec.set(target, allowed("bench"))
	one := make([]byte, 1)
	b.ResetTimer()
	begin := time.Now()
	for range b.N {
		c := openTunnel(b, h, target)
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "tunnels/s")
}
