package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
)

// terminalRelay connects a process's pty to the terminal moat runs in,
// for `moat run` and `moat exec -t` attached to a terminal.
type terminalRelay struct {
	// host is moat's terminal, in raw mode while the process runs.
	host console.Console
	// pty is the process's pty master once received, polled by epoller.
	pty     *console.EpollConsole
	epoller *console.Epoller
}

// relayTerminal asks libcontainer for a new pty for the process, whose
// master the container's init sends back over a socket pair, and relays
// it to and from moat's terminal.
func relayTerminal(p *libcontainer.Process) (*stdio, error) {
	host, err := hostTerminal()
	if err != nil {
		return nil, err
	}
	ours, theirs, err := utils.NewSockPair("console")
	if err != nil {
		return nil, fmt.Errorf("console socket pair: %w", err)
	}
	p.ConsoleSocket = theirs
	s := &stdio{
		childEnds: []io.Closer{ours, theirs},
		term:      &terminalRelay{host: host},
		termReady: make(chan error, 1),
	}
	go func() { s.termReady <- s.term.attach(ours, s) }()
	return s, nil
}

// hostTerminal finds the terminal moat runs in: one of its standard
// streams, or else its controlling terminal.
func hostTerminal() (console.Console, error) {
	for _, f := range []*os.File{os.Stderr, os.Stdout, os.Stdin} {
		c, err := console.ConsoleFromFile(f)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, console.ErrNotAConsole) {
			return nil, fmt.Errorf("unable to get console: %w", err)
		}
	}
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return nil, err
	}
	c, err := console.ConsoleFromFile(tty)
	if err != nil {
		tty.Close()
		return nil, fmt.Errorf("unable to get console: %w", err)
	}
	return c, nil
}

// attach receives the pty master on sock, starts copying between it and
// moat's terminal and switches that terminal to raw mode.
func (t *terminalRelay) attach(sock *os.File, s *stdio) (err error) {
	master, err := utils.RecvFile(sock) //nolint:staticcheck // The replacement is internal to runc.
	if err != nil {
		return fmt.Errorf("receive the pty master: %w", err)
	}
	pty, err := console.ConsoleFromFile(master)
	if err != nil {
		return err
	}
	// moat's own terminal translates newlines; the pty must not as well.
	if err := console.ClearONLCR(pty.Fd()); err != nil {
		return err
	}
	poller, err := console.NewEpoller()
	if err != nil {
		return err
	}
	polled, err := poller.Add(pty)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = polled.Close()
		}
	}()
	go func() { _ = poller.Wait() }()
	go func() { _, _ = io.Copy(polled, os.Stdin) }()
	s.copyOut(os.Stdout, polled)
	if err := t.host.SetRaw(); err != nil {
		return fmt.Errorf("failed to set the terminal from the stdin: %w", err)
	}
	go restoreOnInterrupt(t.host)
	t.pty, t.epoller = polled, poller
	s.ownEnds = []io.Closer{polled}
	return nil
}

// resize copies the size of moat's terminal to the pty.
func (t *terminalRelay) resize() error {
	if t.pty == nil {
		return nil
	}
	return t.pty.ResizeFrom(t.host)
}

// shutdown stops polling the pty once the process has exited, letting the
// output copy finish.
func (t *terminalRelay) shutdown() {
	if t.pty != nil {
		_ = t.pty.Shutdown(t.epoller.CloseConsole)
	}
}

// restore returns moat's terminal to the mode it had.
func (t *terminalRelay) restore() {
	_ = t.host.Reset()
}

// restoreOnInterrupt ends moat on SIGINT, restoring its terminal first. In
// raw mode Ctrl-C reaches the process as a character; a SIGINT to moat
// comes from elsewhere.
func restoreOnInterrupt(c console.Console) {
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	<-interrupted
	_ = c.Reset()
	os.Exit(0)
}
