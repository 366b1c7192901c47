package runtime

import (
	"slices"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// normalizeSpec makes libcontainer v1.5 accept two spec shapes that the
// runtime-spec allows, that runc 1.1 (the runc Debian 12, containerd 1.6
// and Docker 20.10 ship) runs, and that newer libcontainer refuses. Both
// changes only drop values the kernel ignores, so what the container sees
// is what runc 1.1 gives it; nothing else in the spec is touched.
//
//   - A FIFO device (type "p") with major/minor numbers: mknod ignores
//     them for FIFOs, but libcontainer checks the node it made against
//     them and fails ("has incorrect major:minor: 0:0 doesn't match").
//   - A bind mount with filesystem-specific options (e.g. "size=1k"): a
//     bind mount takes none, runc 1.1 ignored them, libcontainer refuses
//     the spec ("bind mounts cannot have any filesystem-specific options
//     applied").
func normalizeSpec(spec *specs.Spec, knownMountOptions []string) {
	if spec.Linux != nil {
		for i := range spec.Linux.Devices {
			d := &spec.Linux.Devices[i]
			if d.Type == "p" && (d.Major != 0 || d.Minor != 0) {
				logrus.Debugf("device %s is a FIFO: ignoring major:minor %d:%d", d.Path, d.Major, d.Minor)
				d.Major, d.Minor = 0, 0
			}
		}
	}
	for i := range spec.Mounts {
		m := &spec.Mounts[i]
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind") {
			continue
		}
		kept := m.Options[:0:0]
		for _, o := range m.Options {
			if isMountFlag(o, knownMountOptions) {
				kept = append(kept, o)
			} else {
				logrus.Warnf("bind mount %s: ignoring filesystem option %q (a bind mount takes none)", m.Destination, o)
			}
		}
		m.Options = kept
	}
}

// isMountFlag says whether o is a mount flag libcontainer knows (as
// opposed to filesystem data such as "size=1k" or "mode=755").
func isMountFlag(o string, known []string) bool {
	if slices.Contains(known, o) {
		return true
	}
	// Flags with a value that libcontainer understands.
	return strings.HasPrefix(o, "idmap") || strings.HasPrefix(o, "ridmap") || strings.HasPrefix(o, "X-mount.")
}
