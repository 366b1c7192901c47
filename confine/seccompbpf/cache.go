package seccompbpf

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/moatsandbox/moat/confine"
)

// Cache keeps the programs Compile makes in a directory (the runtime's
// state directory, root's), so that the profile every container of an
// engine shares is compiled once: libseccomp takes 8-15 ms for Docker's
// default profile on the test VM, at every container's create. An entry is
// keyed by everything the program depends on (the profile, libseccomp's
// version, this package's translation) and checked when read; anything
// wrong with it makes Compile compile again. The zero Cache compiles every
// time.
type Cache struct {
	Dir string
}

// cacheFormat changes whenever the translation in Compile does, so that
// entries made by another moat are not reused.
const cacheFormat = "moat-seccompbpf-1"

// maxCacheEntries bounds the directory: past it, new programs are compiled
// and not kept.
const maxCacheEntries = 256

// Compile returns the program of profile: the cached one when there is a
// sound entry for it, else Compile's, kept for the next time.
func (c Cache) Compile(profile *specs.LinuxSeccomp) (*confine.SeccompProgram, error) {
	if c.Dir == "" || profile == nil {
		return Compile(profile)
	}
	if err := checkNotify(profile); err != nil {
		return nil, err
	}
	version := libraryVersion()
	if version == "" {
		return Compile(profile)
	}
	data, err := json.Marshal(profile)
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	sum := sha256.Sum256(append([]byte(cacheFormat+"\x00"+version+"\x00"), data...))
	path := filepath.Join(c.Dir, hex.EncodeToString(sum[:])+".json")
	if p, ok := readCached(path); ok {
		return p, nil
	}
	p, err := Compile(profile)
	if err != nil {
		return nil, err
	}
	c.store(path, p)
	return p, nil
}

// readCached reads an entry, if it is a sound program.
func readCached(path string) (*confine.SeccompProgram, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	var p confine.SeccompProgram
	if json.Unmarshal(data, &p) != nil || p.Name != "container" || p.Validate() != nil {
		return nil, false
	}
	return &p, true
}

// store keeps p at path, replacing it atomically. Failing to is only a
// cost: the next create compiles again.
func (c Cache) store(path string, p *confine.SeccompProgram) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return
	}
	if entries, err := os.ReadDir(c.Dir); err != nil || len(entries) >= maxCacheEntries {
		return
	}
	data, err := json.Marshal(p)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(c.Dir, ".tmp-")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		_ = os.Remove(tmp.Name())
	}
}
