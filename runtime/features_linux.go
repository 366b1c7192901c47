package runtime

// The commands that need no container: features and spec.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/specconv"
	runcfeatures "github.com/opencontainers/runc/types/features"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// AnnotationMoatVersion is the features annotation with moat's version.
const AnnotationMoatVersion = "dev.moat.version"

// Features prints the runtime-spec features document, as `runc features`
// does: what libcontainer supports, in the lists libcontainer publishes.
// The runc version annotation names the libcontainer moat is built on;
// checkpointing is reported off, as moat does not implement it.
func (r *Runtime) Features() error {
	doc := features.Features{OCIVersionMin: "1.0.0", OCIVersionMax: specs.Version, Linux: linuxFeatures()}
	doc.Hooks, doc.MountOptions = configs.KnownHookNames(), specconv.KnownMountOptions()
	doc.Annotations = map[string]string{
		AnnotationMoatVersion:                        r.Version,
		runcfeatures.AnnotationRuncVersion:           moduleVersion("github.com/opencontainers/runc"),
		runcfeatures.AnnotationRuncCheckpointEnabled: "false",
	}
	if v := libseccompVersion(); v != "" {
		doc.Linux.Seccomp = seccompFeatures()
		doc.Annotations[runcfeatures.AnnotationLibseccompVersion] = v
	}
	// Config annotations that change what libcontainer does: "bundle",
	// systemd unit properties (a prefix) and a CRIU configuration file.
	doc.PotentiallyUnsafeConfigAnnotations = []string{"bundle", "org.systemd.property.", "org.criu.config"}
	enc := json.NewEncoder(r.stdout())
	enc.SetIndent("", "    ")
	return enc.Encode(doc)
}

// on returns a new true, for the features document's optional booleans.
func on() *bool {
	t := true
	return &t
}

func linuxFeatures() *features.Linux {
	l := &features.Linux{
		Cgroup:          &features.Cgroup{V1: on(), V2: on(), Systemd: on(), SystemdUser: on(), Rdma: on()},
		Apparmor:        &features.Apparmor{Enabled: on()},
		Selinux:         &features.Selinux{Enabled: on()},
		IntelRdt:        &features.IntelRdt{Enabled: on(), Schemata: on(), Monitoring: on()},
		MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: on()}},
		NetDevices:      &features.NetDevices{Enabled: on()},
	}
	l.Namespaces, l.Capabilities = specconv.KnownNamespaces(), capabilities.KnownCapabilities()
	l.MemoryPolicy = &features.MemoryPolicy{Modes: specconv.KnownMemoryPolicyModes(), Flags: specconv.KnownMemoryPolicyFlags()}
	return l
}

func seccompFeatures() *features.Seccomp {
	s := &features.Seccomp{Enabled: on()}
	s.Actions, s.Operators, s.Archs = seccomp.KnownActions(), seccomp.KnownOperators(), seccomp.KnownArchs()
	s.KnownFlags, s.SupportedFlags = seccomp.KnownFlags(), seccomp.SupportedFlags()
	return s
}

// libseccompVersion is the version of the libseccomp moat is linked
// with, or "" when it was built without seccomp support.
func libseccompVersion() string {
	if !seccomp.Enabled {
		return ""
	}
	major, minor, patch := seccomp.Version()
	return fmt.Sprintf("%d.%d.%d", major, minor, patch)
}

// moduleVersion is the version, without "v", of a module moat is built
// with.
func moduleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				return strings.TrimPrefix(dep.Version, "v")
			}
		}
	}
	return "unknown"
}

// Spec writes a starter config.json into bundle ("" is the current
// directory): libcontainer's example spec, which runs "sh" on a terminal,
// optionally adjusted for a rootless container. An existing config.json is
// left alone.
func Spec(bundle string, rootless bool) error {
	data, err := json.MarshalIndent(starterSpec(rootless), "", "\t")
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(bundle, specConfig), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("File %s exists. Remove it first", specConfig)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func starterSpec(rootless bool) *specs.Spec {
	s := specconv.Example()
	if rootless {
		specconv.ToRootless(s)
	}
	return s
}
