package engine

import (
	"encoding/binary"
	"sync"

	"github.com/moatsandbox/moat/policy"
)

// cacheSize bounds a decision cache; a full cache is cleared and refilled.
var cacheSize = 65536

// cache holds connection verdicts of one compiled policy revision (each
// Load starts a fresh one, so the revision is implicitly part of the key).
// Safe for concurrent use.
type cache struct {
	mu  sync.RWMutex
	m   map[string]*verdict
	max int
}

func newCache(max int) *cache {
	return &cache{m: make(map[string]*verdict), max: max}
}

func (c *cache) get(key []byte) *verdict {
	c.mu.RLock()
	v := c.m[string(key)] // no allocation: the conversion is only a lookup
	c.mu.RUnlock()
	return v
}

func (c *cache) put(key []byte, v *verdict) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[string(key)] = v
	c.mu.Unlock()
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// appendKey appends the cache key of a connection to b: the port, the
// lowercased host and the whole identity (executable and every ancestor,
// each path with its fingerprint), every string length-prefixed so that
// distinct inputs never share a key. Command-line paths are not part of the
// key: they never change a verdict, only the wording of a binary deny
// reason, which is rendered per call.
func appendKey(b []byte, host string, in *policy.Input) []byte {
	b = binary.BigEndian.AppendUint16(b, in.Port)
	b = appendString(b, host)
	b = appendString(b, in.Binary.Path)
	b = appendString(b, in.Binary.Fingerprint)
	for _, a := range in.Ancestors {
		b = appendString(b, a.Path)
		b = appendString(b, a.Fingerprint)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
