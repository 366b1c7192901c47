// Package bypass watches for direct connections that try to get around the
// sandbox's egress proxy.
//
// The inner network namespace of a sandbox ends its nftables output chain
// with `log group G` followed by a reject, so every packet that is neither
// for the sidecar, nor on loopback, nor part of an accepted flow is refused
// at once and handed to nfnetlink_log (NFLOG) group G. A Monitor owns that
// group: it opens a NETLINK_NETFILTER socket inside the inner network
// namespace, binds it to the group with packet copy mode (the first bytes of
// each packet are enough for the IP and TCP/UDP headers), and turns each
// logged packet into an Event: protocol, source and destination, the uid and
// gid that own the sending socket, and the rule's log prefix.
//
// A TCP SYN is refused before the NFLOG message is read, and the socket
// that sent it is gone by then, so an Event alone cannot name the calling
// program. Sandboxes with egress therefore send new TCP connections to an
// NFQUEUE first. A Queue owns it: it reads each SYN while the connecting
// socket still waits in SYN_SENT (so sock_diag can find it), hands the
// Event to a callback, then answers NF_REPEAT with RejectMark, and the
// chain rejects the marked packet with a TCP reset: the connect still
// fails at once with ECONNREFUSED. The queue is never fail-open and has no
// bypass flag, so with no Queue listening the kernel drops the SYNs and
// connects time out instead (fail closed). Verdicts need CAP_NET_ADMIN.
//
// Nothing here depends on kernel log sysctls, dmesg or /dev/kmsg; the
// messages arrive over netlink, so the monitor works in any network
// namespace and keeps working when the host's kernel log is noisy or
// rate-limited.
//
// The wire parsers (netlink framing, NFULA attributes, IPv4/IPv6 with
// extension headers, TCP/UDP ports) are pure functions over byte slices
// and never panic on truncated or hostile input; they are fuzzed by
// FuzzParse.
package bypass
