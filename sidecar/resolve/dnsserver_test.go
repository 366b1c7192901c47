package resolve

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a tiny authoritative-style server for tests, on UDP and TCP.
type dnsServer struct {
	t    *testing.T
	udp  net.PacketConn
	tcp  net.Listener
	mu   sync.Mutex
	seen []string // "NAME TYPE" of every query, in order
	// records maps a lower-case absolute name to its answers.
	a     map[string][]netip.Addr
	aaaa  map[string][]netip.Addr
	cname map[string]string
	// truncate names whose UDP answers are marked truncated.
	truncate map[string]bool
	// servfail answers every query with SERVFAIL.
	servfail atomic.Bool
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{t: t, udp: udp, tcp: tcp, a: map[string][]netip.Addr{}, aaaa: map[string][]netip.Addr{},
		cname: map[string]string{}, truncate: map[string]bool{}}
	t.Cleanup(func() { udp.Close(); tcp.Close() })
	go s.serveUDP()
	go s.serveTCP()
	return s
}

func (s *dnsServer) serveUDP() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n], true); resp != nil {
			s.udp.WriteTo(resp, from)
		}
	}
}

func (s *dnsServer) serveTCP() {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return
			}
			msg := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			resp := s.answer(msg, false)
			binary.BigEndian.PutUint16(l[:], uint16(len(resp)))
			c.Write(append(l[:], resp...))
		}()
	}
}

// set changes the records under the lock the server reads them with.
func (s *dnsServer) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *dnsServer) queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

func (s *dnsServer) answer(msg []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := strings.ToLower(q.Name.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, name+" "+strings.TrimPrefix(q.Type.String(), "Type"))
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	var answers []func(b *dnsmessage.Builder) error
	target := name
	exists := false
	if c, ok := s.cname[name]; ok {
		exists = true
		answers = append(answers, func(b *dnsmessage.Builder) error {
			return b.CNAMEResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Class: dnsmessage.ClassINET, TTL: 60},
				dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(c)})
		})
		target = c
	}
	list := s.a
	if q.Type == dnsmessage.TypeAAAA {
		list = s.aaaa
	}
	if _, ok := s.a[target]; ok {
		exists = true
	}
	if _, ok := s.aaaa[target]; ok {
		exists = true
	}
	for _, a := range list[target] {
		hdr := dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(target), Class: dnsmessage.ClassINET, TTL: 60}
		answers = append(answers, func(b *dnsmessage.Builder) error {
			if a.Is4() {
				return b.AResource(hdr, dnsmessage.AResource{A: a.As4()})
			}
			return b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: a.As16()})
		})
	}
	switch {
	case s.servfail.Load():
		rh.RCode = dnsmessage.RCodeServerFailure
		answers = nil
	case !exists:
		rh.RCode = dnsmessage.RCodeNameError
	case udp && s.truncate[name]:
		rh.Truncated = true
		answers = nil
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, f := range answers {
		if err := f(&b); err != nil {
			s.t.Errorf("build answer: %v", err)
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		s.t.Errorf("finish answer: %v", err)
		return nil
	}
	return out
}

// dialTo sends each nameserver address to one of the test servers.
func dialTo(servers map[string]*dnsServer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		s, ok := servers[host]
		if !ok {
			return nil, errors.New("no test server for " + addr)
		}
		target := s.udp.LocalAddr().String()
		if network == "tcp" {
			target = s.tcp.Addr().String()
		}
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}
}
