package confine

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const testPasswd = `root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
sandbox:x:1000:1000::/home/sandbox:/bin/sh
agent:x:1001:100:Agent:/srv/agent:/bin/sh
`

const testGroup = `root:x:0:
users:x:100:agent
sandbox:x:1000:
docker:x:999:sandbox,agent
video:x:44:sandbox
`

func writeRootfs(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"passwd": passwd, "group": group} {
		if data == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveUser(t *testing.T) {
	root := writeRootfs(t, testPasswd, testGroup)
	spec := specs.User{UID: 1001, GID: 100, AdditionalGids: []uint32{5, 6}}
	for _, c := range []struct {
		name, user, group string
		spec              specs.User
		want              Identity
		err               string
	}{
		{name: "no process section keeps the spec's user", spec: spec,
			want: Identity{UID: 1001, GID: 100, AdditionalGids: []uint32{5, 6}, Username: "agent", Home: "/srv/agent"}},
		{name: "spec user without an entry", spec: specs.User{UID: 4242, GID: 7},
			want: Identity{UID: 4242, GID: 7}},
		{name: "by name", user: "sandbox", spec: spec,
			want: Identity{UID: 1000, GID: 1000, AdditionalGids: []uint32{999, 44}, Username: "sandbox", Home: "/home/sandbox"}},
		{name: "by name with a group name", user: "sandbox", group: "video", spec: spec,
			want: Identity{UID: 1000, GID: 44, AdditionalGids: []uint32{999, 44}, Username: "sandbox", Home: "/home/sandbox"}},
		{name: "numeric with an entry", user: "1001", spec: spec,
			want: Identity{UID: 1001, GID: 100, AdditionalGids: []uint32{999}, Username: "agent", Home: "/srv/agent"}},
		{name: "numeric without an entry", user: "61000", spec: spec,
			want: Identity{UID: 61000, GID: 61000, Home: "/"}},
		{name: "numeric user and group", user: "61000", group: "61001", spec: spec,
			want: Identity{UID: 61000, GID: 61001, Home: "/"}},
		{name: "group only", group: "docker", spec: spec,
			want: Identity{UID: 1001, GID: 999, AdditionalGids: []uint32{5, 6}, Username: "agent", Home: "/srv/agent"}},
		{name: "unknown user", user: "sandbox2", spec: spec, err: `user "sandbox2" not found in the container's /etc/passwd`},
		{name: "unknown group", user: "sandbox", group: "wheel", spec: spec, err: `group "wheel" not found in the container's /etc/group`},
		{name: "-1 is not an id", user: "4294967295", spec: spec, err: `user "4294967295" not found`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ResolveUser(root, c.user, c.group, c.spec)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("want error %q, got %v, %+v", c.err, err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestResolveUserNoFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := ResolveUser(root, "sandbox", "", specs.User{}); err == nil ||
		err.Error() != `user "sandbox" not found in the container's /etc/passwd` {
		t.Fatalf("got %v", err)
	}
	id, err := ResolveUser(root, "", "", specs.User{UID: 5, GID: 6})
	if err != nil || id.UID != 5 || id.GID != 6 {
		t.Fatalf("got %+v, %v", id, err)
	}
}

// TestResolveUserSymlinkEscape: an image whose /etc/passwd is a symlink to
// an absolute or ../ path reads inside its own root, never the host's file.
func TestResolveUserSymlinkEscape(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	if err := os.WriteFile(hostPasswd, []byte("hostonly:x:7777:7777::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{hostPasswd, "../../../../../../../.." + hostPasswd} {
		root := writeRootfs(t, "", "")
		if err := os.Symlink(target, filepath.Join(root, "etc", "passwd")); err != nil {
			t.Fatal(err)
		}
		if id, err := ResolveUser(root, "hostonly", "", specs.User{}); err == nil {
			t.Errorf("symlink to %s: resolved a host user: %+v", target, id)
		}
	}
}
