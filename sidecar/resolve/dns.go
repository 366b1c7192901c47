package resolve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// errNotFound is a definite "no such name / no records of that type".
var errNotFound = errors.New("no such host")

// maxCNAMEs bounds a CNAME chain in one answer.
const maxCNAMEs = 10

// query asks the nameservers for one name and type, trying every server
// `attempts` times, and returns the addresses of the answer (following
// CNAMEs within it). errNotFound means NXDOMAIN or an answer without such
// records.
func (r *Resolver) query(ctx context.Context, c *config, start int, name string, qtype dnsmessage.Type) ([]netip.Addr, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("dns name %q: %w", name, err)
	}
	q := dnsmessage.Question{Name: qname, Type: qtype, Class: dnsmessage.ClassINET}
	var lastErr error
	for range c.attempts {
		for i := range c.servers {
			srv := netip.AddrPortFrom(c.servers[(start+i)%len(c.servers)], 53)
			addrs, err := r.exchange(ctx, c, srv, q)
			if err == nil || errors.Is(err, errNotFound) {
				return addrs, err
			}
			lastErr = fmt.Errorf("nameserver %s: %w", srv, err)
			if ctx.Err() != nil {
				return nil, lastErr
			}
		}
	}
	return nil, lastErr
}

// exchange sends q to one server, over UDP and then TCP when the answer
// is truncated (or over TCP only with `options use-vc`).
func (r *Resolver) exchange(ctx context.Context, c *config, srv netip.AddrPort, q dnsmessage.Question) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	id := uint16(rand.Uint32())
	msg, err := newQuery(id, q)
	if err != nil {
		return nil, err
	}
	var resp []byte
	if !c.tcp {
		resp, err = r.roundTrip(ctx, "udp", srv, id, q, msg)
		if err != nil {
			return nil, err
		}
	}
	if resp == nil {
		if resp, err = r.roundTrip(ctx, "tcp", srv, id, q, msg); err != nil {
			return nil, err
		}
		if resp == nil {
			return nil, errors.New("truncated answer over tcp")
		}
	}
	return answer(resp, q)
}

func newQuery(id uint16, q dnsmessage.Question) ([]byte, error) {
	b := dnsmessage.NewBuilder(make([]byte, 2, 514), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, fmt.Errorf("build dns query: %w", err)
	}
	return msg, nil // two leading bytes reserved for the TCP length
}

// roundTrip sends the query and reads the matching response. A nil
// response with a nil error means the UDP answer was truncated.
func (r *Resolver) roundTrip(ctx context.Context, network string, srv netip.AddrPort, id uint16, q dnsmessage.Question, msg []byte) ([]byte, error) {
	dial := r.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, network, srv.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, srv, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if network == "tcp" {
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		if _, err := conn.Write(msg); err != nil {
			return nil, fmt.Errorf("write query: %w", err)
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		h, err := matches(resp, id, q)
		if err != nil {
			return nil, err
		}
		if h.Truncated {
			return nil, nil
		}
		return resp, nil
	}
	if _, err := conn.Write(msg[2:]); err != nil {
		return nil, fmt.Errorf("write query: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		h, err := matches(buf[:n], id, q)
		if err != nil {
			continue // a stray or spoofed datagram; keep waiting
		}
		if h.Truncated {
			return nil, nil
		}
		return buf[:n], nil
	}
}

// matches checks that resp answers query id for q.
func matches(resp []byte, id uint16, q dnsmessage.Question) (dnsmessage.Header, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return h, fmt.Errorf("parse answer: %w", err)
	}
	if !h.Response || h.ID != id {
		return h, errors.New("answer does not match the query")
	}
	got, err := p.Question()
	if err != nil {
		return h, fmt.Errorf("parse answer question: %w", err)
	}
	if got.Type != q.Type || got.Class != q.Class || !strings.EqualFold(got.Name.String(), q.Name.String()) {
		return h, errors.New("answer is for another question")
	}
	return h, nil
}

// answer extracts the A or AAAA records for the question's name, or for
// names it is a CNAME of within the answer.
func answer(resp []byte, q dnsmessage.Question) ([]netip.Addr, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, fmt.Errorf("parse answer: %w", err)
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, errNotFound
	default:
		return nil, fmt.Errorf("server answered %s", strings.TrimPrefix(h.RCode.String(), "RCode"))
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, fmt.Errorf("parse answer: %w", err)
	}
	cname := make(map[string]string)
	found := make(map[string][]netip.Addr)
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse answer: %w", err)
		}
		owner := strings.ToLower(rh.Name.String())
		switch {
		case rh.Class != dnsmessage.ClassINET:
			err = p.SkipAnswer()
		case rh.Type == dnsmessage.TypeCNAME:
			var r dnsmessage.CNAMEResource
			if r, err = p.CNAMEResource(); err == nil {
				cname[owner] = strings.ToLower(r.CNAME.String())
			}
		case rh.Type == dnsmessage.TypeA && q.Type == dnsmessage.TypeA:
			var r dnsmessage.AResource
			if r, err = p.AResource(); err == nil {
				found[owner] = append(found[owner], netip.AddrFrom4(r.A))
			}
		case rh.Type == dnsmessage.TypeAAAA && q.Type == dnsmessage.TypeAAAA:
			var r dnsmessage.AAAAResource
			if r, err = p.AAAAResource(); err == nil {
				found[owner] = append(found[owner], netip.AddrFrom16(r.AAAA))
			}
		default:
			err = p.SkipAnswer()
		}
		if err != nil {
			return nil, fmt.Errorf("parse answer: %w", err)
		}
	}
	name := strings.ToLower(q.Name.String())
	for range maxCNAMEs {
		if addrs := found[name]; len(addrs) > 0 {
			return addrs, nil
		}
		next, ok := cname[name]
		if !ok {
			break
		}
		name = next
	}
	return nil, errNotFound
}
