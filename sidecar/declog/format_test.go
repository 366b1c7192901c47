package declog

import (
	"strings"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		r    Record
		want string
	}{{
		name: "denied by policy",
		r: Record{Time: at, Action: ActionDeny, Engine: EngineOPA, Binary: "/usr/bin/wget", PID: 42,
			Host: "example.com", Port: 443, Policy: "github", Reason: "endpoint example.com:443 not in policy 'github'"},
		want: "2026-11-27T08:00:00Z DENIED /usr/bin/wget(42) -> example.com:443 [policy:github engine:opa] [reason:endpoint example.com:443 not in policy 'github']",
	}, {
		name: "allowed, no reason",
		r: Record{Time: at, Action: ActionAllow, Engine: EngineOPA, Binary: "/usr/bin/curl", PID: 7,
			Host: "api.github.com", Port: 443, Policy: "github_api"},
		want: "2026-11-27T08:00:00Z ALLOWED /usr/bin/curl(7) -> api.github.com:443 [policy:github_api engine:opa]",
	}, {
		name: "audit with L7 and ancestors",
		r: Record{Time: at, Action: ActionAudit, Engine: EngineL7, Binary: "/usr/bin/git", PID: 9,
			Host: "github.com", Port: 443, Method: "POST", Path: "/x/y.git/git-receive-pack", Policy: "gh",
			Ancestors: []string{"/usr/bin/bash", "/usr/bin/node"}},
		want: "2026-11-27T08:00:00Z AUDIT /usr/bin/git(9) -> github.com:443 POST /x/y.git/git-receive-pack [policy:gh engine:l7] [ancestors:/usr/bin/bash,/usr/bin/node]",
	}, {
		name: "bypass",
		r: Record{Time: at, Action: ActionReject, Engine: EngineBypass, Binary: "/usr/bin/nc", PID: 5,
			Address: "192.0.2.10", Port: 53, Protocol: "udp", Reason: "direct connection bypassed HTTP CONNECT proxy"},
		want: "2026-11-27T08:00:00Z BYPASS_DETECT /usr/bin/nc(5) -> 192.0.2.10:53 proto=udp action=reject [policy:- engine:bypass] [reason:direct connection bypassed HTTP CONNECT proxy]",
	}, {
		name: "unresolved caller, IPv6 address",
		r:    Record{Time: at.Add(time.Hour), Action: ActionDeny, Engine: EngineSSRF, Host: "internal.example", Address: "fd00::1", Port: 80},
		want: "2026-11-27T09:00:00Z DENIED - -> internal.example:80 addr=fd00::1 [policy:- engine:ssrf]",
	}, {
		name: "IPv6 destination",
		r:    Record{Time: at, Action: "weird", Engine: EngineDNS, Address: "2001:db8::1", Port: 443},
		want: "2026-11-27T08:00:00Z WEIRD - -> [2001:db8::1]:443 [policy:- engine:dns]",
	}, {
		name: "hostile fields are escaped",
		r:    Record{Time: at, Action: ActionDeny, Engine: EngineOPA, Binary: "/tmp/x\x1b[2J", Host: "a\nb [reason:fake]", Port: 1},
		want: `2026-11-27T08:00:00Z DENIED /tmp/x\x1b\[2J -> a\nb \[reason:fake\]:1 [policy:- engine:opa]`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Format(tt.r)
			if got != tt.want {
				t.Errorf("Format:\n got %s\nwant %s", got, tt.want)
			}
			if strings.ContainsAny(got, "\n\r\x1b") {
				t.Errorf("line contains control characters: %q", got)
			}
		})
	}
}
