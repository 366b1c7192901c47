package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/runtime-spec/specs-go"
	selinux "github.com/opencontainers/selinux/go-selinux"
)

// loadSpec reads a bundle's spec file and checks the process it
// describes. The error texts are runc's.
func loadSpec(path string) (*specs.Spec, error) {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("JSON specification file %s not found", path)
	case err != nil:
		return nil, err
	}
	defer f.Close()
	var spec *specs.Spec // stays nil for a literal `null`
	if err := json.NewDecoder(f).Decode(&spec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if spec == nil {
		return nil, errors.New("config cannot be null")
	}
	if err := checkProcess(spec.Process); err != nil {
		return nil, err
	}
	return spec, nil
}

// checkProcess rejects a process libcontainer could not start; it
// applies to config.json's process and to exec's.
func checkProcess(p *specs.Process) error {
	var problem string
	switch {
	case p == nil:
		problem = "process property must not be empty"
	case p.Cwd == "":
		problem = "Cwd property must not be empty"
	case !filepath.IsAbs(p.Cwd):
		problem = "Cwd must be an absolute path"
	case len(p.Args) == 0:
		problem = "args must not be empty"
	case p.SelinuxLabel != "" && !selinux.GetEnabled():
		problem = "selinux label is specified in config, but selinux is disabled or not supported"
	default:
		return nil
	}
	return errors.New(problem)
}
