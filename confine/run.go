package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Exit codes moat-init uses for its own failures (the program's own status
// passes through unchanged; a program killed by signal N gives 128+N).
const (
	// ExitConfineFailed: the plan could not be read or applied; nothing ran.
	ExitConfineFailed = 1
	// ExitCannotExec: the program exists but could not be executed
	// (permission, Landlock, not an executable).
	ExitCannotExec = 126
	// ExitNotFound: the program was not found.
	ExitNotFound = 127
)

// ExitError is an error with the exit status moat-init should end with.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the status for err: its ExitError code, else
// ExitConfineFailed.
func ExitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitConfineFailed
}

// defaultPath is used to find the program when the environment has no PATH
// (runc and Docker use the same).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// MergeEnv returns env with every KEY=VALUE of overrides replacing the
// entry of the same key, or appended, in order.
func MergeEnv(env, overrides []string) []string {
	out := make([]string, 0, len(env)+len(overrides))
	keys := make(map[string]bool, len(overrides))
	for _, kv := range overrides {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, overrides...)
}

func getenv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// LookPath resolves the program the way execvp does: a name with a slash is
// used as it is, anything else is searched in the PATH of env.
func LookPath(name string, env []string) (string, error) {
	if name == "" {
		return "", &ExitError{ExitNotFound, errors.New("no program to run")}
	}
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	path, ok := getenv(env, "PATH")
	if !ok {
		path = defaultPath
	}
	var firstErr error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && ExitCode(err) == ExitCannotExec {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", &ExitError{ExitNotFound, fmt.Errorf("exec %q: executable file not found in $PATH", name)}
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &ExitError{ExitNotFound, fmt.Errorf("exec %s: no such file or directory", p)}
	case err != nil:
		return &ExitError{ExitCannotExec, fmt.Errorf("exec %s: %w", p, err)}
	case st.IsDir():
		return &ExitError{ExitCannotExec, fmt.Errorf("exec %s: is a directory", p)}
	case st.Mode()&0o111 == 0:
		return &ExitError{ExitCannotExec, fmt.Errorf("exec %s: permission denied", p)}
	}
	return nil
}
