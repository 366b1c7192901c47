package control

import (
	"encoding/json"
	"fmt"
	"os"
)

// ConfigFile is the sidecar's configuration inside the sandbox's network
// directory; `moat create` writes it before starting the sidecar.
const ConfigFile = "sidecar.json"

// Config is everything a sidecar needs to serve one sandbox.
type Config struct {
	Sandbox string `json:"sandbox"`
	// PolicyFile is the resolved policy document; "" is moat's embedded
	// default policy.
	PolicyFile   string `json:"policy_file,omitempty"`
	PolicySource string `json:"policy_source,omitempty"`
	// InnerNetNS is the pinned inner network namespace (sock_diag, NFLOG,
	// NFQUEUE).
	InnerNetNS string `json:"inner_netns"`
	// Proxy is the proxy's listen address (the outer veth address).
	Proxy string `json:"proxy"`
	// Inbound are the ports forwarded into the sandbox.
	Inbound []Forward `json:"inbound,omitempty"`
	// Socket is the control socket's path.
	Socket string `json:"socket"`
	// LogDir holds the decision log; LogMaxBytes and LogMaxFiles cap it.
	LogDir      string `json:"log_dir"`
	LogMaxBytes int64  `json:"log_max_bytes"`
	LogMaxFiles int    `json:"log_max_files"`
	// ResolvConf and Hosts are the files the container resolves names
	// with (the engine's bind mounts, else the image's).
	ResolvConf string `json:"resolv_conf,omitempty"`
	Hosts      string `json:"hosts,omitempty"`
	// NFLogGroup is the NFLOG group of refused bypass attempts; 0: none.
	NFLogGroup uint16 `json:"nflog_group,omitempty"`
	// NFQueue is the NFQUEUE new direct TCP connections wait in until the
	// sidecar has named their binary and refused them; 0: none.
	NFQueue uint16 `json:"nfqueue,omitempty"`
	// User and Group the sidecar drops to after setup; 0 keeps root.
	User  uint32 `json:"user,omitempty"`
	Group uint32 `json:"group,omitempty"`
}

// Forward is one inbound port: connections to Port on the outer netns's
// addresses (and 127.0.0.1) are relayed to Target in the inner netns.
type Forward struct {
	Port   uint16 `json:"port"`
	Target string `json:"target"`
}

// WriteConfig writes c to path (0600).
func WriteConfig(path string, c *Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sidecar config: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write sidecar config: %w", err)
	}
	return nil
}

// ReadConfig reads a sidecar configuration.
func ReadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sidecar config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("sidecar config %s: %w", path, err)
	}
	switch {
	case c.Sandbox == "":
		return nil, fmt.Errorf("sidecar config %s: no sandbox id", path)
	case c.InnerNetNS == "" || c.Proxy == "" || c.Socket == "" || c.LogDir == "":
		return nil, fmt.Errorf("sidecar config %s: inner_netns, proxy, socket and log_dir are required", path)
	}
	return &c, nil
}
