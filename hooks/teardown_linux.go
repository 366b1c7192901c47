package hooks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TeardownNetwork undoes SetupNetwork for the sandbox whose state
// directory is dir, in reverse order: the outer nftables table and the veth
// (unless the outer netns is disposable),
// the inner netns pin, the outer netns pin, the address allocation and the
// state file. It is idempotent and works from whatever a crash or kill -9
// at any earlier point left: a missing piece is fine, and names the state
// file lacks are derived from dir the way setup derives them. When a step
// fails the state file stays, so a later call can finish the job.
func TeardownNetwork(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("network teardown: %w", err)
	}
	n, err := readState(abs)
	if err != nil {
		n = &Network{} // none written yet, or torn: fall back to derived names
	}
	id := sandboxID(abs)
	innerPin := orDefault(n.InnerPath, filepath.Join(abs, InnerNetNSFile))
	outerPin := orDefault(n.OuterPath, filepath.Join(abs, outerPinFile))

	var errs []error
	// A disposable outer netns takes its table and the veth with it;
	// otherwise they are deleted here.
	if !n.OuterDisposable {
		if err := cleanOuter(outerPin, orDefault(n.Table, "moat_"+id), orDefault(n.VethOuter, "moat"+id)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unpinNetNS(innerPin); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Keep the outer pin while its netns may still hold our table or
		// veth: it is the only way back in.
		if err := unpinNetNS(outerPin); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case n.Alloc != "":
		if err := release(n.Alloc, abs); err != nil {
			errs = append(errs, err)
		}
	case n.AllocNS != "":
		if err := releaseOwned(n.AllocNS, abs); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("network teardown of %s: %w", abs, errors.Join(errs...))
	}
	return removeState(abs)
}

// cleanOuter deletes the sandbox's table and veth in the outer netns pinned
// at pin. Without a pin nothing was made there: setup pins the outer netns
// before touching it.
func cleanOuter(pin, table, veth string) error {
	f, err := os.OpenFile(pin, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open outer network namespace: %w", err)
	}
	defer f.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return fmt.Errorf("open outer network namespace: %w", err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return nil // the pin file was made but never mounted
	}
	c, err := dialNetNS(f)
	if err != nil {
		return err
	}
	defer c.Close()
	return errors.Join(deleteTable(c.nft, table), deleteLink(c, veth))
}

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
