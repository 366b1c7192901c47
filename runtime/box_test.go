//go:build linux

package runtime

import (
	"reflect"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestBoxSpec(t *testing.T) {
	spec := boxSpec(BoxSpecInput{
		Args:     []string{"sh", "-c", "true"},
		Env:      []string{"PATH=/bin", "HOME=/root"},
		Cwd:      "/work",
		Terminal: true,
		HostDirs: []string{"usr", "proc", "etc", "tmp", "run", "dev", "sys", "work"},
		RW:       []string{"/work/a/b", "/work/a", "/tmp/x", "relative", "/work/a/"},
	})
	if spec.Root.Path != "rootfs" || !spec.Root.Readonly {
		t.Errorf("root %+v, want a read-only rootfs", spec.Root)
	}
	p := spec.Process
	if !p.Terminal || p.Cwd != "/work" || !reflect.DeepEqual(p.Args, []string{"sh", "-c", "true"}) {
		t.Errorf("process %+v", p)
	}
	if want := []string{"PATH=/bin", "HOME=/root", "TERM=xterm"}; !reflect.DeepEqual(p.Env, want) {
		t.Errorf("env %q, want %q", p.Env, want)
	}
	var nsTypes []specs.LinuxNamespaceType
	for _, ns := range spec.Linux.Namespaces {
		nsTypes = append(nsTypes, ns.Type)
	}
	if want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace}; !reflect.DeepEqual(nsTypes, want) {
		t.Errorf("namespaces %v, want %v (host network)", nsTypes, want)
	}
	var got []string
	for _, m := range spec.Mounts {
		got = append(got, m.Destination+" "+m.Type+" "+m.Source)
	}
	want := []string{
		"/etc bind /etc", "/usr bind /usr", "/work bind /work",
		"/proc proc proc", "/dev tmpfs tmpfs", "/dev/pts devpts devpts", "/dev/shm tmpfs shm",
		"/dev/mqueue mqueue mqueue", "/sys sysfs sysfs", "/tmp tmpfs tmpfs", "/run tmpfs tmpfs",
		"/work/a bind /work/a", "/work/a/b bind /work/a/b",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mounts\n%q\nwant\n%q", got, want)
	}
	for _, m := range spec.Mounts {
		if m.Type != "bind" {
			continue
		}
		ro := m.Destination == "/etc" || m.Destination == "/usr" || m.Destination == "/work"
		if has := contains(m.Options, "rro"); has != ro {
			t.Errorf("%s options %v: recursive read-only %v, want %v", m.Destination, m.Options, has, ro)
		}
		if !ro && !contains(m.Options, "rw") {
			t.Errorf("%s options %v, want rw", m.Destination, m.Options)
		}
	}
}

func TestBoxSpecDefaults(t *testing.T) {
	spec := boxSpec(BoxSpecInput{Args: []string{"true"}})
	if spec.Process.Cwd != "/" || spec.Process.Terminal {
		t.Errorf("process %+v, want / and no terminal", spec.Process)
	}
	if len(spec.Process.Env) != 1 || spec.Process.Env[0][:5] != "PATH=" {
		t.Errorf("env %q, want a default PATH only", spec.Process.Env)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
