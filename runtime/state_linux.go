package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/runc/libcontainer"
)

// ContainerState is a container as `state` and `list --format json`
// print it, with runc's field names. Version is the OCI version of the
// container's config.json; InitProcessPid is the pid of its first process
// as moat sees it, 0 once the container has stopped; Status is created,
// running, paused or stopped; Created is in UTC. Owner, the owner of the
// container's state directory, is set by list only.
type ContainerState struct {
	Version        string            `json:"ociVersion"`
	ID             string            `json:"id"`
	InitProcessPid int               `json:"pid"`
	Status         string            `json:"status"`
	Bundle         string            `json:"bundle"`
	Rootfs         string            `json:"rootfs"`
	Created        time.Time         `json:"created"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	Owner          string            `json:"owner"`
}

// State prints the container's state as indented JSON.
func (r *Runtime) State(id string) error {
	c, err := r.load(id)
	if err != nil {
		return err
	}
	s, err := describe(c)
	if err != nil {
		return err
	}
	if extra := r.sandboxAnnotations(id); len(extra) > 0 {
		ann := make(map[string]string, len(s.Annotations)+len(extra))
		maps.Copy(ann, s.Annotations)
		maps.Copy(ann, extra)
		s.Annotations = ann
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = r.stdout().Write(data)
	return err
}

// describe reads a container's state: the OCI state libcontainer computes
// plus what only its saved state has.
func describe(c *libcontainer.Container) (*ContainerState, error) {
	oci, err := c.OCIState()
	if err != nil {
		return nil, err
	}
	saved, err := c.State()
	if err != nil {
		return nil, err
	}
	return &ContainerState{
		Version:        saved.Config.Version,
		ID:             oci.ID,
		InitProcessPid: oci.Pid,
		Status:         string(oci.Status),
		Bundle:         oci.Bundle,
		Rootfs:         saved.Config.Rootfs,
		Created:        saved.Created,
		Annotations:    oci.Annotations,
	}, nil
}

// ListOpts are the options of list.
type ListOpts struct {
	// Format is "table" or "json".
	Format string
	// Quiet prints the ids only.
	Quiet bool
}

// List prints the containers under the root.
func (r *Runtime) List(o ListOpts) error {
	all, err := r.allContainers()
	if err != nil {
		return err
	}
	w := r.stdout()
	switch {
	case o.Quiet:
		for _, s := range all {
			fmt.Fprintln(w, s.ID)
		}
		return nil
	case o.Format == "table":
		return writeTable(w, all)
	case o.Format == "json":
		return json.NewEncoder(w).Encode(all)
	}
	return errors.New("invalid format option")
}

func writeTable(w io.Writer, all []ContainerState) error {
	tw := tabwriter.NewWriter(w, 12, 1, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER")
	for _, s := range all {
		created := s.Created.Format(time.RFC3339Nano)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.InitProcessPid, s.Status, s.Bundle, created, s.Owner)
	}
	return tw.Flush()
}

// allContainers describes every container under the root. Containers
// that cannot be read are reported on stderr and skipped.
func (r *Runtime) allContainers() ([]ContainerState, error) {
	entries, err := os.ReadDir(r.Root)
	if errors.Is(err, fs.ErrNotExist) && !r.RootSet {
		return nil, nil // the default root appears with the first container
	}
	if err != nil {
		return nil, err
	}
	var all []ContainerState
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		owner, err := dirOwner(e)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return nil, err
		}
		c, err := libcontainer.Load(r.Root, e.Name())
		if err != nil {
			fmt.Fprintf(os.Stderr, "load container %s: %v\n", e.Name(), err)
			continue
		}
		s, err := describe(c)
		if err != nil {
			fmt.Fprintf(os.Stderr, "state of container %s: %v\n", e.Name(), err)
			continue
		}
		s.Owner = owner
		all = append(all, *s)
	}
	return all, nil
}

// dirOwner names the owner of a state directory: a user name, or "#uid".
func dirOwner(e fs.DirEntry) (string, error) {
	info, err := e.Info()
	if err != nil {
		return "", err
	}
	uid := strconv.FormatUint(uint64(info.Sys().(*syscall.Stat_t).Uid), 10)
	if u, err := user.LookupId(uid); err == nil {
		return u.Username, nil
	}
	return "#" + uid, nil
}
