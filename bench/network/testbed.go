package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// testbed is the network the measurements run on, made as a CNI plugin
// would (and as test/e2e's testbed is): an "outer" netns for the sandbox
// (the spec names its path) linked by a veth pair to an "upstream" netns
// where the server listens, on a private /24 the policy reaches through
// allowed_ips.
type testbed struct {
	outer, upstream string // netns names
	outerPath       string // the outer netns's path, for the spec
	outerIP, upIP   string // the veth's addresses
	subnet          string
}

// newTestbed makes the two namespaces and the veth pair; on error it
// removes what it made.
func newTestbed() (b *testbed, err error) {
	pid := os.Getpid()
	n := pid%200 + 20
	b = &testbed{
		outer:    fmt.Sprintf("moat-bench-out-%d", pid),
		upstream: fmt.Sprintf("moat-bench-up-%d", pid),
		outerIP:  fmt.Sprintf("10.79.%d.1", n),
		upIP:     fmt.Sprintf("10.79.%d.2", n),
		subnet:   fmt.Sprintf("10.79.%d.0/24", n),
	}
	b.outerPath = filepath.Join("/run/netns", b.outer)
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	veth := fmt.Sprintf("mbn%d", pid)
	for _, argv := range [][]string{
		{"netns", "add", b.outer},
		{"netns", "add", b.upstream},
		{"link", "add", veth + "a", "netns", b.outer, "type", "veth", "peer", "name", veth + "b", "netns", b.upstream},
		{"-n", b.outer, "addr", "add", b.outerIP + "/24", "dev", veth + "a"},
		{"-n", b.upstream, "addr", "add", b.upIP + "/24", "dev", veth + "b"},
		{"-n", b.outer, "link", "set", veth + "a", "up"},
		{"-n", b.upstream, "link", "set", veth + "b", "up"},
		{"-n", b.outer, "link", "set", "lo", "up"},
		{"-n", b.upstream, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("testbed: ip %s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
		}
	}
	return b, nil
}

// close removes both namespaces; the veth pair goes with them.
func (b *testbed) close() {
	for _, ns := range []string{b.outer, b.upstream} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// in returns argv run inside the netns ns (ip netns exec execs it, so
// the command's pid is the program's own).
func in(ns string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// daemon is a long-running process the benchmark started and stops by
// its pid.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startDaemon starts cmd with its output in logPath.
func startDaemon(name string, cmd *exec.Cmd, logPath string) (*daemon, error) {
	logF, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	defer logF.Close()
	cmd.Stdout, cmd.Stderr = logF, logF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// alive reports whether the process still runs.
func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process's pid, then SIGKILL after grace.
func (d *daemon) stop(grace time.Duration) {
	if !d.alive() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return
	case <-time.After(grace):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// output runs cmd with a timeout and returns its stdout; stdout and
// stderr go through files, since a process it starts may keep them open.
func output(dir string, timeout time.Duration, cmd *exec.Cmd) (string, error) {
	outF, err := os.CreateTemp(dir, "out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(outF.Name())
	defer outF.Close()
	errF, err := os.CreateTemp(dir, "err-")
	if err != nil {
		return "", err
	}
	defer os.Remove(errF.Name())
	defer errF.Close()
	cmd.Stdout, cmd.Stderr = outF, errF
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		err = fmt.Errorf("timed out after %v: %w", timeout, <-waitErr)
	}
	stdout, _ := os.ReadFile(outF.Name())
	if err != nil {
		stderr, _ := os.ReadFile(errF.Name())
		return string(stdout), fmt.Errorf("%s: %w\n%s%s", strings.Join(cmd.Args, " "), err, stdout, stderr)
	}
	return string(stdout), nil
}
