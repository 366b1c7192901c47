//go:build !linux

package bypass

import (
	"context"
	"errors"
	"fmt"
)

// Monitor reads one NFLOG group of one network namespace. NFLOG exists
// only on Linux; elsewhere Open always fails.
type Monitor struct{}

// Open fails: NFLOG is Linux-only.
func Open(innerNetNS string, group uint16) (*Monitor, error) {
	return nil, fmt.Errorf("bypass: NFLOG group %d: %w", group, errors.ErrUnsupported)
}

// Run returns at once with an error.
func (m *Monitor) Run(ctx context.Context, fn func(Event)) error {
	return fmt.Errorf("bypass: %w", errors.ErrUnsupported)
}

// Dropped is always zero.
func (m *Monitor) Dropped() uint64 { return 0 }

// Close does nothing.
func (m *Monitor) Close() error { return nil }
