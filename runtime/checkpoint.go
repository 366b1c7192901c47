package runtime

import "fmt"

// Checkpoint and Restore are not implemented: a checkpoint of a sandboxed
// container would have to capture its sidecar and network namespaces too.
func Checkpoint(id string) error {
	return fmt.Errorf("checkpoint %s: %w", id, ErrNotSupported)
}

// Restore: see Checkpoint.
func Restore(id string) error {
	return fmt.Errorf("restore %s: %w", id, ErrNotSupported)
}
