// Package nsthread runs code on an OS thread switched into another network
// namespace, the one way a Go program can make a socket or a namespace
// somewhere other than where it runs: a namespace belongs to a thread,
// and the Go runtime moves goroutines between threads.
//
// The work runs on a fresh goroutine locked to its thread. The thread is
// switched back to its original namespace afterwards and unlocked only
// once it is back there; if it cannot go back, the goroutine exits still
// locked, which makes the runtime retire the thread, so no other goroutine
// ever runs in the wrong namespace.
package nsthread

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// threadNetNS is the calling thread's network namespace.
const threadNetNS = "/proc/thread-self/ns/net"

// Run runs fn on a locked thread after enter has switched that thread's
// network namespace (with setns or unshare; enter gets the thread's
// original namespace, open, and must leave the thread where it was when
// it fails), then switches the thread back. It returns fn's error, or why
// the thread could not be switched (enter's error as it is).
func Run(enter func(orig int) error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open thread network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := enter(orig); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore thread network namespace: %w", err))
			return // still locked: the thread exits with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// In runs fn on a locked thread switched into the network namespace open
// at nsFd.
func In(nsFd int, fn func() error) error {
	return Run(func(int) error {
		if err := unix.Setns(nsFd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}, fn)
}

// Socket makes a socket with mk on a thread in the network namespace open
// at nsFd; the socket stays in that namespace. On error no socket is left
// open, even one mk made before the thread failed to switch back.
func Socket(nsFd int, mk func() (int, error)) (int, error) {
	fd := -1
	err := In(nsFd, func() (err error) {
		fd, err = mk()
		return err
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, err
	}
	return fd, nil
}
