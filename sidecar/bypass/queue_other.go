//go:build !linux

package bypass

import (
	"context"
	"errors"
	"fmt"
)

// Queue reads one NFQUEUE of one network namespace. NFQUEUE exists only
// on Linux; elsewhere OpenQueue always fails.
type Queue struct{}

// OpenQueue fails: NFQUEUE is Linux-only.
func OpenQueue(innerNetNS string, num uint16) (*Queue, error) {
	return nil, fmt.Errorf("bypass: NFQUEUE %d: %w", num, errors.ErrUnsupported)
}

// Run returns at once with an error.
func (q *Queue) Run(ctx context.Context, fn func(Event)) error {
	return fmt.Errorf("bypass: %w", errors.ErrUnsupported)
}

// Dropped is always zero.
func (q *Queue) Dropped() uint64 { return 0 }

// Close does nothing.
func (q *Queue) Close() error { return nil }
