package hooks

// nftables rules of a sandbox with egress, built as netlink expressions
// (no nft binary); one without egress has no veth, no route and no table
// (see configureInner). The inner netns lets its processes reach only
// loopback and the sidecar's proxy: everything else is logged to an NFLOG group the sidecar
// reads and refused at once (TCP reset, ICMP unreachable), so a program
// that ignores HTTP_PROXY fails fast instead of timing out. In a sandbox
// with egress, new TCP connections, UDP datagrams and pings take a detour
// first: a SYN, a datagram or an echo request goes to an NFQUEUE the
// sidecar reads while the sending socket still exists (so it can name the
// calling binary), and comes back marked with RejectMark, which the chain
// answers with a TCP reset or an ICMP error. Datagrams and pings past a
// rate limit skip the detour (a flood does not queue up in the sidecar):
// they are logged and refused like any other packet. The queue has no bypass flag: with
// no sidecar listening, the kernel drops what it gets, so a dead sidecar
// leaves direct connections timing out, never getting through (fail
// closed). The outer netns drops whatever comes out of the
// veth except traffic to the proxy, so even a process that flushes the
// inner rules gets nowhere.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/moatsandbox/moat/sidecar/bypass"
	"golang.org/x/sys/unix"
)

// InnerTable is the nftables table (family inet) of every inner netns.
const InnerTable = "moat"

// RejectMark is the packet mark the sidecar gives a queued SYN with its
// NF_REPEAT verdict; the inner output chain rejects marked packets with a
// TCP reset when they traverse it again. It is defined by the sidecar's
// queue reader, so the sidecar does not link this package.
const RejectMark = bypass.RejectMark

// loopbackIndex is the interface index of lo in every network namespace.
const loopbackIndex = 1

// innerRules is what the inner netns's table allows.
type innerRules struct {
	proxy    netip.AddrPort // the sidecar's proxy
	inbound  []uint16       // inner ports the sidecar may connect to
	logGroup uint16         // NFLOG group of refused packets
	queue    uint16         // NFQUEUE of new TCP connections, datagrams and pings; 0: none
	// xtQueue queues with the xtables NFQUEUE target (through nft_compat)
	// instead of nftables' own queue expression, which kernels built
	// without CONFIG_NFT_QUEUE lack.
	xtQueue bool
}

// addInnerTable queues the inner netns's table on c: an output chain that
// accepts local traffic, established flows and the proxy, queues new TCP
// connections, datagrams and pings to the sidecar (with a queue) and logs
// and rejects the rest,
// and an input chain that drops what is neither loopback, established nor
// a new connection from the proxy's address to an inbound port.
func addInnerTable(c *nftables.Conn, r innerRules) {
	t := c.AddTable(&nftables.Table{Name: InnerTable, Family: nftables.TableFamilyINet})
	out := c.AddChain(baseChain(t, "output", nftables.ChainHookOutput, nftables.ChainPolicyAccept))
	rules := [][]expr.Any{
		// Loopback to this netns's own addresses only: the IPv6 default
		// route through lo (see loopbackRoute6) brings bypass attempts here.
		join(matchIfIndex(expr.MetaKeyOIF, loopbackIndex), matchLocalDst(), accept()),
		join(matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept()),
		join(matchIPv4(ipv4DaddrOffset, r.proxy.Addr()), matchTCPDport(r.proxy.Port()), accept()),
	}
	if r.queue != 0 {
		rules = append(rules,
			// What the sidecar has seen comes back with the mark.
			join(matchL4(unix.IPPROTO_TCP), matchMark(RejectMark), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
			join(matchL4(unix.IPPROTO_UDP), matchMark(RejectMark), rejectPortUnreachable()),
			join(matchL4(unix.IPPROTO_ICMP), matchMark(RejectMark), rejectAdminProhibited()),
			// No QueueFlagBypass: without a listener the packet is dropped.
			join(matchL4(unix.IPPROTO_TCP), matchTCPSyn(), matchCtState(expr.CtStateBitNEW), queueTo(r.queue, r.xtQueue)),
			join(matchL4(unix.IPPROTO_UDP), matchCtState(expr.CtStateBitNEW), queueLimit(), queueTo(r.queue, r.xtQueue)),
			join(matchL4(unix.IPPROTO_ICMP), matchICMPType(icmpEchoRequest), queueLimit(), queueTo(r.queue, r.xtQueue)),
		)
	}
	rules = append(rules,
		// A queue threshold of 1 hands each message to the sidecar at once
		// instead of batching them for up to a second.
		[]expr.Any{&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_QTHRESHOLD, Group: r.logGroup, QThreshold: 1}},
		join(matchL4(unix.IPPROTO_TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
		join(matchL4(unix.IPPROTO_UDP), rejectPortUnreachable()),
		[]expr.Any{rejectAdminProhibited()},
	)
	addRules(c, t, out, rules)

	in := c.AddChain(baseChain(t, "input", nftables.ChainHookInput, nftables.ChainPolicyDrop))
	rules = [][]expr.Any{
		join(matchIfIndex(expr.MetaKeyIIF, loopbackIndex), accept()),
		join(matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept()),
	}
	for _, p := range r.inbound {
		rules = append(rules, join(matchIPv4(ipv4SaddrOffset, r.proxy.Addr()), matchTCPDport(p), accept()))
	}
	addRules(c, t, in, rules)
}

// addOuterTable queues the outer netns's table of one sandbox on c,
// replacing any table of that name a crash left behind: no forwarding to
// or from the veth, and nothing from the veth to the outer netns itself but
// established flows and new connections to the proxy.
func addOuterTable(c *nftables.Conn, name, veth string, proxy netip.AddrPort) {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	fwd := c.AddChain(baseChain(t, "forward", nftables.ChainHookForward, nftables.ChainPolicyAccept))
	addRules(c, t, fwd, [][]expr.Any{
		join(matchIfName(expr.MetaKeyIIFNAME, veth), drop()),
		join(matchIfName(expr.MetaKeyOIFNAME, veth), drop()),
	})
	in := c.AddChain(baseChain(t, "input", nftables.ChainHookInput, nftables.ChainPolicyAccept))
	fromVeth := matchIfName(expr.MetaKeyIIFNAME, veth)
	addRules(c, t, in, [][]expr.Any{
		join(fromVeth, matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept()),
		join(fromVeth, matchIPv4(ipv4DaddrOffset, proxy.Addr()), matchTCPDport(proxy.Port()), accept()),
		join(fromVeth, drop()),
	})
}

// xtQueueMemo, in a NetworkSpec's KernelDir, says that the kernel lacks
// nftables' own queue expression (CONFIG_NFT_QUEUE), so that setups use the
// xtables NFQUEUE target at once. Finding it out takes a batch that fails
// as a whole and an abort, whose RCU synchronisation made the inner table
// cost about 2-3 ms more on the test VM, at every egress sandbox's start.
// It is only a first choice: a setup whose batch fails with it tries the
// other expression and corrects it.
const xtQueueMemo = "nft-queue-xtables"

// rememberedXTQueue reports whether the setups in kernelDir found that the
// xtables NFQUEUE target is the queue expression that works.
func rememberedXTQueue(kernelDir string) bool {
	if kernelDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(kernelDir, xtQueueMemo))
	return err == nil
}

// rememberXTQueue records which queue expression works. Failing to is
// only a cost: the next setup finds out again.
func rememberXTQueue(kernelDir string, xt bool) {
	if kernelDir == "" {
		return
	}
	path := filepath.Join(kernelDir, xtQueueMemo)
	if !xt {
		_ = os.Remove(path)
		return
	}
	if err := os.MkdirAll(kernelDir, 0o700); err == nil {
		_ = os.WriteFile(path, nil, 0o600)
	}
}

// queueExprName names a queue expression for errors.
func queueExprName(xt bool) string {
	if xt {
		return "the xtables NFQUEUE target"
	}
	return "the nftables queue expression"
}

// deleteTable deletes an inet table; a missing one is fine.
func deleteTable(c *nftables.Conn, name string) error {
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", name, err)
	}
	return nil
}

// baseChain is a filter chain on hook at the filter priority.
func baseChain(t *nftables.Table, name string, hook *nftables.ChainHook, policy nftables.ChainPolicy) *nftables.Chain {
	return &nftables.Chain{
		Name:     name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &policy,
	}
}

// addRules queues one rule per expression list, in order.
func addRules(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain, rules [][]expr.Any) {
	for _, exprs := range rules {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
}

// join concatenates expressions into one rule.
func join(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			out = append(out, p...)
		case expr.Any:
			out = append(out, p)
		}
	}
	return out
}

// The rate at which UDP datagrams and pings go to the sidecar's queue (per
// second, with a burst), enough for any resolver's retries or ping.
const (
	queueRate  = 50
	queueBurst = 50
)

// queueLimit passes packets up to the queue's rate.
func queueLimit() expr.Any {
	return &expr.Limit{Type: expr.LimitTypePkts, Rate: queueRate, Unit: expr.LimitTimeSecond, Burst: queueBurst}
}

func rejectPortUnreachable() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}
}

func rejectAdminProhibited() expr.Any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}
}

// icmpEchoRequest is the ICMP type of a ping.
const icmpEchoRequest = 8

// matchICMPType matches ICMP packets of type typ (the caller matches the
// protocol).
func matchICMPType(typ byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		eq([]byte{typ}),
	}
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }

// eq compares register 1 with data.
func eq(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

// matchIfIndex matches the input or output interface index.
func matchIfIndex(key expr.MetaKey, index uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, eq(binary.NativeEndian.AppendUint32(nil, index))}
}

// matchLocalDst matches packets to an address of this netns (fib daddr
// type local).
func matchLocalDst() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		eq(binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)),
	}
}

// matchIfName matches the input or output interface name exactly.
func matchIfName(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, eq(b)}
}

// matchCtState matches packets whose conntrack state has any of bits.
func matchCtState(bits uint32) []expr.Any {
	zero := binary.NativeEndian.AppendUint32(nil, 0)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: zero},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
	}
}

// matchL4 matches the transport protocol.
func matchL4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq([]byte{proto})}
}

// Offsets of the addresses in an IPv4 header.
const (
	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
)

// matchIPv4 matches IPv4 packets whose address at offset is addr.
func matchIPv4(offset uint32, addr netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		eq([]byte{unix.NFPROTO_IPV4}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		eq(addr.AsSlice()),
	}
}

// matchMark matches packets whose mark is mark.
func matchMark(mark uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, eq(binary.NativeEndian.AppendUint32(nil, mark))}
}

// TCP header flags.
const (
	tcpFlagsOffset = 13
	tcpFlagSYN     = 0x02
	tcpFlagACK     = 0x10
)

// matchTCPSyn matches the TCP segments that open a connection: SYN set,
// ACK clear (tcp flags & (syn|ack) == syn). The caller matches the
// protocol.
func matchTCPSyn() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFlagSYN | tcpFlagACK}, Xor: []byte{0}},
		eq([]byte{tcpFlagSYN}),
	}
}

// queueTo sends packets to NFQUEUE num, without the bypass flag (no
// listener: the packet is dropped), with nftables' queue expression or,
// with xtTarget, the xtables NFQUEUE target (revision 3, whose struct
// xt_NFQ_info_v3 is queuenum, queues_total, flags in host order).
func queueTo(num uint16, xtTarget bool) expr.Any {
	if !xtTarget {
		return &expr.Queue{Num: num, Total: 1}
	}
	info := binary.NativeEndian.AppendUint16(nil, num)
	info = binary.NativeEndian.AppendUint16(info, 1)
	info = binary.NativeEndian.AppendUint16(info, 0)
	xinfo := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &xinfo}
}

// matchTCPDport matches TCP packets to port.
func matchTCPDport(port uint16) []expr.Any {
	return join(matchL4(unix.IPPROTO_TCP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		eq(binary.BigEndian.AppendUint16(nil, port)))
}
