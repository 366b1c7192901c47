package hooks

// A minimal NFQUEUE (nfnetlink_queue) listener, standing in for the
// sidecar's queue reader: it answers every queued packet with NF_REPEAT and
// RejectMark, as the sidecar does, and remembers the destinations.

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_queue message types, attributes and values
// (linux/netfilter/nfnetlink_queue.h, linux/netfilter.h).
const (
	nfqnlMsgPacket   = 0
	nfqnlMsgVerdict  = 1
	nfqnlMsgConfig   = 2
	nfqaPacketHdr    = 1
	nfqaVerdictHdr   = 2
	nfqaMark         = 3
	nfqaPayload      = 10
	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqnlCfgCmdBind  = 1
	nfqnlCopyPacket  = 2
	nfqnlCopyRange   = 128
	nfRepeat         = 4
	nfqueueReadSlice = 100 * time.Millisecond
)

// nfqueueListener is a socket bound to one NFQUEUE of a netns that
// verdicts what it reads until the test ends or stop is called.
type nfqueueListener struct {
	c       *netlink.Conn
	num     uint16
	mu      sync.Mutex
	dsts    map[netip.AddrPort]bool
	done    chan struct{}
	once    sync.Once
	closing atomic.Bool
}

// listenNFQueue binds queue num in the netns at path and starts answering.
func listenNFQueue(t *testing.T, path string, num uint16) *nfqueueListener {
	t.Helper()
	var c *netlink.Conn
	inNS(t, path, func() (err error) {
		c, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		return err
	})
	params := binary.BigEndian.AppendUint32(nil, nfqnlCopyRange)
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, 0}},
		{Type: nfqaCfgParams, Data: append(params, nfqnlCopyPacket)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute(nfqueueMessage(nfqnlMsgConfig, num, netlink.Acknowledge, attrs)); err != nil {
		_ = c.Close()
		t.Fatalf("bind NFQUEUE %d: %v", num, err)
	}
	l := &nfqueueListener{c: c, num: num, dsts: map[netip.AddrPort]bool{}, done: make(chan struct{})}
	go l.serve(t)
	t.Cleanup(l.stop)
	return l
}

// nfqueueMessage is a request of nfnetlink_queue for queue num.
func nfqueueMessage(typ int, num uint16, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
	hdr := []byte{unix.AF_UNSPEC, 0}
	hdr = binary.BigEndian.AppendUint16(hdr, num)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_QUEUE<<8 | typ), Flags: netlink.Request | flags},
		Data:   append(hdr, attrs...),
	}
}

// serve verdicts every queued packet until stop.
func (l *nfqueueListener) serve(t *testing.T) {
	defer close(l.done)
	for {
		_ = l.c.SetReadDeadline(time.Now().Add(nfqueueReadSlice))
		msgs, err := l.c.Receive()
		if err != nil {
			if l.closing.Load() {
				return
			}
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_QUEUE<<8|nfqnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				continue
			}
			var id uint32
			var haveID bool
			for ad.Next() {
				p := ad.Bytes()
				switch {
				case ad.Type() == nfqaPacketHdr && len(p) >= 4:
					id, haveID = binary.BigEndian.Uint32(p), true
				case ad.Type() == nfqaPayload:
					l.seen(p)
				}
			}
			if haveID {
				l.verdict(t, id)
			}
		}
	}
}

func (l *nfqueueListener) verdict(t *testing.T, id uint32) {
	hdr := binary.BigEndian.AppendUint32(nil, nfRepeat)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nfqaVerdictHdr, Data: hdr},
		{Type: nfqaMark, Data: binary.BigEndian.AppendUint32(nil, RejectMark)},
	})
	if err == nil {
		_, err = l.c.Send(nfqueueMessage(nfqnlMsgVerdict, l.num, 0, attrs))
	}
	if err != nil {
		t.Errorf("NFQUEUE verdict for packet %d: %v", id, err)
	}
}

// seen records the destination of a queued TCP SYN (IPv6 without
// extension headers, as the tests send them).
func (l *nfqueueListener) seen(p []byte) {
	var dst netip.AddrPort
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		if ihl := int(p[0]&0x0f) * 4; len(p) >= ihl+4 {
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(p[ihl+2:]))
		}
	case len(p) >= 44 && p[0]>>4 == 6:
		dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(p[24:40])), binary.BigEndian.Uint16(p[42:]))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dsts[dst] = true
}

// queued is the set of destinations of the packets queued so far.
func (l *nfqueueListener) queued() map[netip.AddrPort]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[netip.AddrPort]bool{}
	for a := range l.dsts {
		out[a] = true
	}
	return out
}

// waitFor waits up to timeout for a packet to dst to have been queued.
func (l *nfqueueListener) waitFor(dst netip.AddrPort, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if l.queued()[dst] {
			return
		}
	}
}

// stop ends serve (within one read slice) and closes the socket, which
// unbinds the queue.
func (l *nfqueueListener) stop() {
	l.once.Do(func() {
		l.closing.Store(true)
		<-l.done
		_ = l.c.Close()
	})
}
