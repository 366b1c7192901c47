package hooks

// A minimal NFLOG (nfnetlink_log) listener, standing in for the sidecar's
// bypass monitor to check that refused packets are logged.

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink_log message types, attributes and values (linux/netfilter/nfnetlink_log.h).
const (
	nfulnlMsgPacket   = 0
	nfulnlMsgConfig   = 1
	nfulaCfgCmd       = 1
	nfulaCfgMode      = 2
	nfulnlCfgCmdBind  = 1
	nfulnlCopyPacket  = 2
	nfulnlCopyRange   = 128
	nfnetlinkVersion0 = 0
	nfulaPayload      = 9
)

// nflogListener is a socket bound to one NFLOG group of a netns.
type nflogListener struct{ c *netlink.Conn }

// listenNFLog binds an NFLOG socket to group in the netns at path.
func listenNFLog(t *testing.T, path string, group uint16) *nflogListener {
	t.Helper()
	var c *netlink.Conn
	inNS(t, path, func() (err error) {
		c, err = netlink.Dial(unix.NETLINK_NETFILTER, nil)
		return err
	})
	t.Cleanup(func() { _ = c.Close() })
	mode := binary.BigEndian.AppendUint32(nil, nfulnlCopyRange)
	mode = append(mode, nfulnlCopyPacket, 0)
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}},
		{Type: nfulaCfgMode, Data: mode},
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{unix.AF_INET, nfnetlinkVersion0}
	hdr = binary.BigEndian.AppendUint16(hdr, group)
	msg := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: append(hdr, attrs...),
	}
	if _, err := c.Execute(msg); err != nil {
		t.Fatalf("bind NFLOG group %d: %v", group, err)
	}
	return &nflogListener{c: c}
}

// logged collects the IP destinations of the logged packets, waiting
// up to 2 s for the first and then taking what is queued.
func (l *nflogListener) logged(t *testing.T) map[netip.Addr]bool {
	t.Helper()
	dsts := map[netip.Addr]bool{}
	_ = l.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		msgs, err := l.c.Receive()
		if err != nil {
			return dsts
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_ULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				continue
			}
			for ad.Next() {
				p := ad.Bytes()
				switch {
				case ad.Type() != nfulaPayload:
				case len(p) >= 20 && p[0]>>4 == 4:
					dsts[netip.AddrFrom4([4]byte(p[16:20]))] = true
				case len(p) >= 40 && p[0]>>4 == 6:
					dsts[netip.AddrFrom16([16]byte(p[24:40]))] = true
				}
			}
		}
		_ = l.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	}
}
