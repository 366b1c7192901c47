package runtime

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/runc/libcontainer"
)

// stdio is moat's side of a process's standard streams.
type stdio struct {
	// childEnds are moat's copies of descriptors the process inherits
	// (pipe ends, sockets); moat closes them once the process runs.
	childEnds []io.Closer
	// ownEnds are moat's ends of the streams, closed when the output
	// copies are done.
	ownEnds []io.Closer
	// copying counts the goroutines copying output to moat's stdout and
	// stderr.
	copying sync.WaitGroup
	// term relays a pty to moat's terminal; termReady delivers the outcome
	// of setting it up, which happens once the process has its pty.
	term      *terminalRelay
	termReady chan error
}

// relayPipes connects the process to three pipes, owned by uid:gid on the
// host, and copies them to and from moat's own stdio.
func relayPipes(p *libcontainer.Process, uid, gid int) (*stdio, error) {
	pipes, err := p.InitializeIO(uid, gid)
	if err != nil {
		return nil, fmt.Errorf("create stdio pipes: %w", err)
	}
	// InitializeIO stored the process's ends in p.
	s := &stdio{ownEnds: []io.Closer{pipes.Stdin, pipes.Stdout, pipes.Stderr}}
	for _, end := range []any{p.Stdin, p.Stdout, p.Stderr} {
		if c, ok := end.(io.Closer); ok {
			s.childEnds = append(s.childEnds, c)
		}
	}
	// Input is not waited for: moat's stdin may never end.
	go func() {
		_, _ = io.Copy(pipes.Stdin, os.Stdin)
		_ = pipes.Stdin.Close()
	}()
	s.copyOut(os.Stdout, pipes.Stdout)
	s.copyOut(os.Stderr, pipes.Stderr)
	return s, nil
}

// copyOut copies src to dst in the background until src ends.
func (s *stdio) copyOut(dst io.Writer, src io.ReadCloser) {
	s.copying.Go(func() {
		_, _ = io.Copy(dst, src)
		_ = src.Close()
	})
}

// waitTerminal waits until the terminal relay, if any, is set up.
func (s *stdio) waitTerminal() error {
	if s.termReady == nil {
		return nil
	}
	return <-s.termReady
}

// closeChildEnds drops moat's copies of the process's descriptors.
func (s *stdio) closeChildEnds() {
	for _, c := range s.childEnds {
		_ = c.Close()
	}
	s.childEnds = nil
}

// resize gives the process's pty the size of moat's terminal.
func (s *stdio) resize() {
	if s.term != nil {
		// Errors are expected once moat's terminal has gone away.
		_ = s.term.resize()
	}
}

// release ends the streams once the process is gone (or never started):
// it waits for the output copies to drain and restores moat's terminal.
func (s *stdio) release() {
	s.closeChildEnds()
	if s.term != nil {
		s.term.shutdown()
	}
	s.copying.Wait()
	for _, c := range s.ownEnds {
		_ = c.Close()
	}
	if s.term != nil {
		s.term.restore()
	}
}
