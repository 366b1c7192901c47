package confine

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// passwdEntry and groupEntry are lines of /etc/passwd and /etc/group.
type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// userDB is what ResolveUser reads from the container.
type userDB struct {
	passwd []passwdEntry
	group  []groupEntry
}

// parseID reads a numeric uid or gid; -1 (4294967295) is not an id.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, false
	}
	return uint32(n), true
}

// records returns the colon-separated records of an /etc/passwd or
// /etc/group file that have at least minFields fields and a name, skipping
// blank lines and comments.
func records(data []byte, minFields int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < minFields || f[0] == "" {
			continue
		}
		out = append(out, f)
	}
	return out
}

func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	for _, f := range records(data, 7) {
		uid, ok1 := parseID(f[2])
		gid, ok2 := parseID(f[3])
		if !ok1 || !ok2 {
			continue
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5]})
	}
	return out
}

func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	for _, f := range records(data, 4) {
		gid, ok := parseID(f[2])
		if !ok {
			continue
		}
		var members []string
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				members = append(members, m)
			}
		}
		out = append(out, groupEntry{name: f[0], gid: gid, members: members})
	}
	return out
}

func (db *userDB) userByName(name string) (passwdEntry, bool) {
	for _, e := range db.passwd {
		if e.name == name {
			return e, true
		}
	}
	return passwdEntry{}, false
}

func (db *userDB) userByID(uid uint32) (passwdEntry, bool) {
	for _, e := range db.passwd {
		if e.uid == uid {
			return e, true
		}
	}
	return passwdEntry{}, false
}

func (db *userDB) groupByName(name string) (groupEntry, bool) {
	for _, e := range db.group {
		if e.name == name {
			return e, true
		}
	}
	return groupEntry{}, false
}

// supplementary lists the groups naming user as a member, without primary,
// in file order (initgroups).
func (db *userDB) supplementary(user string, primary uint32) []uint32 {
	var out []uint32
	seen := map[uint32]bool{primary: true}
	for _, g := range db.group {
		for _, m := range g.members {
			if m == user && !seen[g.gid] {
				seen[g.gid] = true
				out = append(out, g.gid)
			}
		}
	}
	return out
}

// resolve implements ResolveUser on a parsed database.
//
//   - No user and no group (the policy has no process section): the spec's
//     uid, gid and additionalGids are kept; name and home come from the
//     passwd entry of that uid when there is one.
//   - user is a name: its passwd entry gives uid, primary gid and home, and
//     the groups listing it are its additional gids. A name with no entry
//     is an error.
//   - user is numeric: the same from its entry when there is one; without
//     one, the gid is the same number as the uid (never root's group 0),
//     home is "/" and there are no additional gids.
//   - group, when set, replaces the primary gid (a name must be in
//     /etc/group). With group but no user, the spec's uid and additional
//     gids are kept.
func (db *userDB) resolve(user, group string, spec specs.User) (Identity, error) {
	var id Identity
	switch {
	case user == "":
		id = Identity{UID: spec.UID, GID: spec.GID, AdditionalGids: append([]uint32(nil), spec.AdditionalGids...)}
		if e, ok := db.userByID(spec.UID); ok {
			id.Username, id.Home = e.name, e.home
		}
	default:
		e, found := db.userByName(user)
		if uid, numeric := parseID(user); numeric && !found {
			e, found = db.userByID(uid)
			if !found {
				e = passwdEntry{uid: uid, gid: uid, home: "/"}
			}
		} else if !found {
			return Identity{}, fmt.Errorf("user %q not found in the container's /etc/passwd", user)
		}
		id = Identity{UID: e.uid, GID: e.gid, Username: e.name, Home: e.home}
		if e.name != "" {
			id.AdditionalGids = db.supplementary(e.name, e.gid)
		}
	}
	if group != "" {
		if g, ok := db.groupByName(group); ok {
			id.GID = g.gid
		} else if gid, numeric := parseID(group); numeric {
			id.GID = gid
		} else {
			return Identity{}, fmt.Errorf("group %q not found in the container's /etc/group", group)
		}
	}
	return id, nil
}
