package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// FuzzHead feeds arbitrary request heads through the same parsing steps
// serve uses; it must never panic, and a parsed CONNECT target must be a
// plausible host and a valid port.
func FuzzHead(f *testing.F) {
	f.Add([]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\nearly"))
	f.Add([]byte("GET http://[::1]:8080/a?b=c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("CONNECT [::1]:0 HTTP/1.0\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, maxHead)
		n, end, err := readHead(bytes.NewReader(data), buf)
		if err != nil {
			return
		}
		if end > n || end < 0 || !bytes.Equal(buf[:n], data[:n]) {
			t.Fatalf("readHead = %d, %d", n, end)
		}
		hr := bytes.NewReader(buf[:n])
		br := bufio.NewReader(io.MultiReader(hr, bytes.NewReader(nil)))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Method == http.MethodConnect {
			host, port, err := parseTarget(req.RequestURI)
			if err == nil && (host == "" || port == 0) {
				t.Fatalf("parseTarget(%q) = %q, %d", req.RequestURI, host, port)
			}
			return
		}
		canonicalPath(req.URL.Path)
	})
}
