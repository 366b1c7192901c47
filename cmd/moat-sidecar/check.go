package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/moatsandbox/moat/policy"
	"github.com/moatsandbox/moat/policy/engine"
)

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type checkArgs struct {
	file               string
	binary, host       string
	port               uint
	method, path       string
	ancestors, cmdline multiFlag
	asJSON             bool
}

// parseCheckArgs accepts flags before and after the policy file.
func parseCheckArgs(args []string, stderr io.Writer) (*checkArgs, error) {
	a := &checkArgs{}
	fs := flag.NewFlagSet("moat policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.binary, "binary", "", "executable path of the calling process (required)")
	fs.Var(&a.ancestors, "ancestor", "executable path of an ancestor, nearest first (repeatable)")
	fs.Var(&a.cmdline, "cmdline", "absolute path from the process's argv, for the deny reason only (repeatable)")
	fs.StringVar(&a.host, "host", "", "destination host (required)")
	fs.UintVar(&a.port, "port", 0, "destination port (required)")
	fs.StringVar(&a.method, "method", "", "HTTP method, for an L7 decision")
	fs.StringVar(&a.path, "path", "", "HTTP request path with optional ?query, for an L7 decision")
	fs.BoolVar(&a.asJSON, "json", false, "print the decision as JSON")
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(files) != 1:
		return nil, errors.New("exactly one policy FILE is required")
	case a.binary == "":
		return nil, errors.New("--binary is required")
	case a.host == "":
		return nil, errors.New("--host is required")
	case a.port == 0 || a.port > 65535:
		return nil, errors.New("--port must be 1 to 65535")
	case (a.method == "") != (a.path == ""):
		return nil, errors.New("--method and --path go together")
	case a.path != "" && !strings.HasPrefix(a.path, "/"):
		return nil, errors.New("--path must start with '/'")
	}
	a.file = files[0]
	return a, nil
}

func check(args []string, stdout, stderr io.Writer) int {
	a, err := parseCheckArgs(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "moat policy check: %v\n", err)
		return 2
	}
	p, warnings, err := policy.ParseFile(a.file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, w)
	}
	eng, err := engine.New(p)
	if err != nil {
		fmt.Fprintf(stderr, "moat policy check: %v\n", err)
		return 2
	}
	in := policy.Input{
		Binary:       policy.Exe{Path: a.binary},
		CmdlinePaths: a.cmdline,
		Host:         a.host,
		Port:         uint16(a.port),
	}
	for _, anc := range a.ancestors {
		in.Ancestors = append(in.Ancestors, policy.Exe{Path: anc})
	}
	var d policy.Decision
	if a.method != "" {
		rpath, rawQuery, _ := strings.Cut(a.path, "?")
		q, qerr := url.ParseQuery(rawQuery)
		if qerr != nil {
			fmt.Fprintf(stderr, "moat policy check: bad query string: %v\n", qerr)
			return 2
		}
		d, err = eng.DecideRequest(context.Background(), policy.Request{Input: in, Method: a.method, Path: rpath, Query: q})
	} else {
		d, err = eng.Decide(context.Background(), in)
	}
	if err != nil {
		fmt.Fprintf(stderr, "moat policy check: %v\n", err)
		return 2
	}
	printDecision(stdout, a, d)
	if d.Allowed() {
		return 0
	}
	return 1
}

type jsonDecision struct {
	Action     string   `json:"action"`
	Policy     string   `json:"policy,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Engine     string   `json:"engine"`
	Protocol   string   `json:"protocol,omitempty"`
	TLS        string   `json:"tls,omitempty"`
	Enforce    bool     `json:"enforce,omitempty"`
	AllowedIPs []string `json:"allowed_ips,omitempty"`
}

func printDecision(w io.Writer, a *checkArgs, d policy.Decision) {
	if a.asJSON {
		out := jsonDecision{Action: string(d.Action), Policy: d.Policy, Reason: d.Reason, Engine: d.Engine, AllowedIPs: d.AllowedIPs}
		if e := d.Endpoint; e != nil {
			out.Protocol, out.TLS, out.Enforce = e.Protocol, e.TLS, e.Enforced()
		}
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(out)
		return
	}
	target := fmt.Sprintf("%s:%d", a.host, a.port)
	if a.method != "" {
		target = fmt.Sprintf("%s %s%s", strings.ToUpper(a.method), target, a.path)
	}
	fmt.Fprintf(w, "%s %s from %s", strings.ToUpper(string(d.Action)), target, a.binary)
	if d.Policy != "" {
		fmt.Fprintf(w, " [policy:%s engine:%s]", d.Policy, d.Engine)
	} else {
		fmt.Fprintf(w, " [engine:%s]", d.Engine)
	}
	if d.Reason != "" {
		fmt.Fprintf(w, " [reason:%s]", d.Reason)
	}
	fmt.Fprintln(w)
}
