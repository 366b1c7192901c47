package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Ps prints the container's processes: in "json" format as an array of
// pids, in "table" format as the lines of `ps psArgs...` (default -ef)
// whose PID column is one of them.
func (r *Runtime) Ps(id, format string, psArgs []string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	pids, err := c.Processes()
	if err != nil {
		warnCgroupAccess("ps", err)
		return err
	}
	switch format {
	case "json":
		return json.NewEncoder(r.stdout()).Encode(pids)
	case "table":
		return r.psTable(pids, psArgs)
	}
	return errors.New("invalid format option")
}

func (r *Runtime) psTable(pids []int, psArgs []string) error {
	if len(psArgs) == 0 {
		psArgs = []string{"-ef"}
	}
	out, err := exec.Command("ps", psArgs...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("run ps: %w: %s", err, out)
	}
	header, body, _ := strings.Cut(string(out), "\n")
	column := slices.Index(strings.Fields(header), "PID")
	if column < 0 {
		return errors.New("couldn't find PID field in ps output")
	}
	w := r.stdout()
	fmt.Fprintln(w, header)
	for line := range strings.Lines(body) {
		line = strings.TrimSuffix(line, "\n")
		fields := strings.Fields(line)
		if len(fields) <= column {
			continue
		}
		pid, err := strconv.Atoi(fields[column])
		if err != nil {
			return fmt.Errorf("unable to parse pid: %w", err)
		}
		if slices.Contains(pids, pid) {
			fmt.Fprintln(w, line)
		}
	}
	return nil
}
