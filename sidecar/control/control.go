// Package control is the sidecar's control protocol: `moat policy show`,
// `moat policy apply` and `moat state` talk to a running sidecar over a unix
// socket in the sandbox's state directory. One JSON request, one JSON
// response per connection. It imports neither OPA nor the proxy, so the
// runtime binary can link it.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Operations.
const (
	OpStatus = "status" // is the sidecar alive; its policy revision
	OpShow   = "show"   // the network policy in force, as loaded
	OpApply  = "apply"  // swap the network policy (Request.Policy)
)

// Request is what a client sends.
type Request struct {
	Op string `json:"op"`
	// Policy is the new policy document for OpApply (YAML or JSON).
	Policy string `json:"policy,omitempty"`
	// Name names the document in error messages ("policy.yaml").
	Name string `json:"name,omitempty"`
}

// Response is what the sidecar answers.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Policy is the document in force (OpShow, OpApply).
	Policy string `json:"policy,omitempty"`
	// Source says where the policy in force came from.
	Source   string `json:"source,omitempty"`
	Revision uint64 `json:"revision,omitempty"`
	PID      int    `json:"pid,omitempty"`
	// Closed counts the tunnels OpApply closed because the new policy no
	// longer allows them.
	Closed int `json:"closed,omitempty"`
	// Warnings are the new policy's validation warnings (OpApply).
	Warnings []string `json:"warnings,omitempty"`
}

// Timeout bounds one exchange.
const Timeout = 10 * time.Second

// MaxMessage bounds a request or response.
const MaxMessage = 4 << 20

// Call sends req to the sidecar listening on the socket at path.
func Call(path string, req Request) (*Response, error) {
	conn, err := net.DialTimeout("unix", path, Timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to the sidecar: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(Timeout))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("send to the sidecar: %w", err)
	}
	var resp Response
	if err := json.NewDecoder(&limited{conn, MaxMessage}).Decode(&resp); err != nil {
		return nil, fmt.Errorf("read the sidecar's answer: %w", err)
	}
	if !resp.OK {
		if resp.Error == "" {
			resp.Error = "the sidecar refused the request"
		}
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// limited is an io.Reader that fails after n bytes.
type limited struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("message too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
