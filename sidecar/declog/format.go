package declog

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Format renders r as one line for people, in the shape of OpenShell's
// shorthand log so the same greps work (ALLOWED, DENIED, AUDIT,
// BYPASS_DETECT, "engine:", "policy:", "[reason:"):
//
//	2026-11-27T08:00:00Z DENIED /usr/bin/wget(42) -> example.com:443 [policy:github engine:opa] [reason:...]
//
// Every field is escaped so that a hostile host name or path cannot add
// lines or terminal control sequences.
func Format(r Record) string {
	var b strings.Builder
	b.WriteString(r.Time.UTC().Format(time.RFC3339))
	b.WriteByte(' ')
	b.WriteString(verdict(r))
	b.WriteByte(' ')

	bin := r.Binary
	if bin == "" {
		bin = "-"
	}
	b.WriteString(clean(bin))
	if r.PID != 0 {
		b.WriteString("(" + strconv.Itoa(r.PID) + ")")
	}

	b.WriteString(" -> ")
	b.WriteString(destination(r))
	if r.Method != "" || r.Path != "" {
		b.WriteString(" " + clean(r.Method) + " " + clean(r.Path))
	}
	if r.Address != "" && r.Host != "" && r.Address != r.Host {
		b.WriteString(" addr=" + clean(r.Address))
	}
	if r.Protocol != "" {
		b.WriteString(" proto=" + clean(r.Protocol))
	}
	if r.Engine == EngineBypass && r.Action != "" {
		b.WriteString(" action=" + clean(r.Action))
	}

	policy := r.Policy
	if policy == "" {
		policy = "-"
	}
	engine := r.Engine
	if engine == "" {
		engine = "-"
	}
	b.WriteString(" [policy:" + clean(policy) + " engine:" + clean(engine) + "]")
	if r.Reason != "" {
		b.WriteString(" [reason:" + clean(r.Reason) + "]")
	}
	if len(r.Ancestors) > 0 {
		anc := make([]string, len(r.Ancestors))
		for i, a := range r.Ancestors {
			anc[i] = clean(a)
		}
		b.WriteString(" [ancestors:" + strings.Join(anc, ",") + "]")
	}
	return b.String()
}

// verdict is the greppable word for the record's action.
func verdict(r Record) string {
	if r.Engine == EngineBypass {
		return "BYPASS_DETECT"
	}
	switch r.Action {
	case ActionAllow:
		return "ALLOWED"
	case ActionDeny, ActionReject:
		return "DENIED"
	case ActionAudit:
		return "AUDIT"
	case "":
		return "UNKNOWN"
	}
	return strings.ToUpper(clean(r.Action))
}

// destination is host:port (escaped), or the address when no name was
// given.
func destination(r Record) string {
	host := r.Host
	if host == "" {
		host = r.Address
	}
	if host == "" {
		host = "-"
	}
	if r.Port == 0 {
		return clean(host)
	}
	port := strconv.Itoa(int(r.Port))
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		return "[" + clean(host) + "]:" + port
	}
	return clean(host) + ":" + port
}

// clean escapes control and non-printing characters (and brackets, so a
// field cannot fake a "[reason:" or "[policy:" token) Go-style.
func clean(s string) string {
	ok := true
	for _, c := range s {
		if !safeRune(c) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, c := range s {
		switch {
		case safeRune(c):
			b.WriteRune(c)
		case c == '[' || c == ']':
			b.WriteString(`\` + string(c))
		default:
			q := strconv.QuoteRuneToASCII(c) // 'x' with escapes inside
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

func safeRune(c rune) bool {
	return c != '[' && c != ']' && c != unicode.ReplacementChar && (c == ' ' || unicode.IsPrint(c))
}
