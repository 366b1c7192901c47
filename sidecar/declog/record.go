// Package declog is the sandbox's decision log: one JSON line per
// connection decision (allow, deny, audit), written by the sidecar to a
// capped, rotated file and read back by `moat denials`.
package declog

import "time"

// Actions a record carries (policy.Action values, plus "reject" for bypass
// attempts the kernel refused).
const (
	ActionAllow  = "allow"
	ActionDeny   = "deny"
	ActionAudit  = "audit"
	ActionReject = "reject"
)

// Engines that make decisions.
const (
	EngineOPA       = "opa"
	EngineSSRF      = "ssrf"
	EngineL7        = "l7"
	EngineBypass    = "bypass"
	EngineInference = "inference"
	EngineDNS       = "dns"
	EngineIdentity  = "identity" // the calling binary could not be resolved
	EngineInbound   = "inbound"  // a forwarded inbound connection
	EngineSidecar   = "sidecar"  // the sidecar itself (found not running)
)

// Record is one decision, one JSON line.
type Record struct {
	Time      time.Time `json:"time"`
	Sandbox   string    `json:"sandbox"`
	Action    string    `json:"action"`
	Engine    string    `json:"engine"`
	Binary    string    `json:"binary,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Ancestors []string  `json:"ancestors,omitempty"`
	// Protocol is "tcp", "udp" or "icmp" for bypass records, "http" for
	// forward-proxy requests, "connect" for CONNECT tunnels.
	Protocol string `json:"protocol,omitempty"`
	Host     string `json:"host,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	// Address is the dialled (or refused) IP address, when one was chosen.
	Address string `json:"address,omitempty"`
	Method  string `json:"method,omitempty"`
	Path    string `json:"path,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Sink takes records. Log must not block on slow storage for long and
// must be safe for concurrent use.
type Sink interface {
	Log(r Record)
}
