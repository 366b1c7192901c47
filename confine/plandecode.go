package confine

// A decoder for exactly the JSON of a Plan, so that moat-init reads its
// plan without encoding/json. encoding/json decodes by reflection and
// builds its per-type decoders on first use: in the freshly started
// moat-init that is about 0.9 ms of the container's start (0.1 ms warm),
// most of it the first touch of reflect's and encoding/json's code and
// data, at 15-30 us a page fault on the test VM. This decoder reads the
// same documents, and is stricter where encoding/json is lenient with
// input that Marshal never writes: keys match exactly (not case-folded),
// a key may appear once, strings must be valid UTF-8 without lone
// surrogates, []byte fields only take base64 strings, and nothing may
// follow the document. FuzzParsePlan checks that whatever it accepts,
// encoding/json decodes to the same Plan.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/moatsandbox/moat/policy/plan"
)

// decodePlan decodes data, one JSON object, into a Plan.
func decodePlan(data []byte) (*Plan, error) {
	d := &planDecoder{data: data}
	var p Plan
	if !d.null() {
		if err := d.object(func(key string) error { return d.planField(&p, key) }); err != nil {
			return nil, d.wrap(err)
		}
	}
	d.space()
	if d.pos != len(d.data) {
		return nil, d.wrap(errors.New("data after the plan"))
	}
	return &p, nil
}

// planDecoder reads data from pos on.
type planDecoder struct {
	data []byte
	pos  int
}

// wrap adds the offset where decoding stopped.
func (d *planDecoder) wrap(err error) error {
	return fmt.Errorf("%w (at offset %d)", err, d.pos)
}

func (d *planDecoder) planField(p *Plan, key string) error {
	switch key {
	case "version":
		return d.int(&p.Version)
	case "mode":
		return d.str(&p.Mode)
	case "netns":
		return d.ptr(func() error {
			p.NetNS = &NetNS{}
			return d.object(func(key string) error {
				switch key {
				case "fd":
					return d.int(&p.NetNS.FD)
				case "inode":
					return d.uint64(&p.NetNS.Inode)
				}
				return unknownField(key)
			})
		})
	case "ready":
		return d.ptr(func() error {
			p.Ready = &Ready{}
			return d.object(func(key string) error {
				if key == "inode" {
					return d.uint64(&p.Ready.Inode)
				}
				return unknownField(key)
			})
		})
	case "landlock":
		return d.ptr(func() error {
			p.Landlock = &plan.Plan{}
			return d.object(func(key string) error { return d.landlockField(p.Landlock, key) })
		})
	case "seccomp":
		return list(d, &p.Seccomp, d.seccompProgram)
	case "identity":
		id := &p.Identity
		return d.objectOrNull(func(key string) error {
			switch key {
			case "uid":
				return d.uint32(&id.UID)
			case "gid":
				return d.uint32(&id.GID)
			case "additional_gids":
				return list(d, &id.AdditionalGids, d.uint32)
			case "username":
				return d.str(&id.Username)
			case "home":
				return d.str(&id.Home)
			}
			return unknownField(key)
		})
	case "capabilities":
		return d.ptr(func() error {
			c := &Capabilities{}
			p.Capabilities = c
			return d.object(func(key string) error {
				switch key {
				case "bounding":
					return d.strings(&c.Bounding)
				case "effective":
					return d.strings(&c.Effective)
				case "permitted":
					return d.strings(&c.Permitted)
				case "inheritable":
					return d.strings(&c.Inheritable)
				case "ambient":
					return d.strings(&c.Ambient)
				}
				return unknownField(key)
			})
		})
	case "no_new_privileges":
		return d.bool(&p.NoNewPrivileges)
	case "env":
		return d.strings(&p.Env)
	}
	return unknownField(key)
}

func (d *planDecoder) landlockField(l *plan.Plan, key string) error {
	switch key {
	case "compatibility":
		return d.str(&l.Compatibility)
	case "rules":
		return list(d, &l.Rules, d.rule)
	case "entrypoint_interpreter":
		return d.bool(&l.EntrypointInterpreter)
	case "gpu_devices":
		return d.bool(&l.GPUDevices)
	}
	return unknownField(key)
}

func (d *planDecoder) seccompProgram(sp *SeccompProgram) error {
	return d.object(func(key string) error {
		switch key {
		case "name":
			return d.str(&sp.Name)
		case "flags":
			return d.uint32(&sp.Flags)
		case "instructions":
			return d.bytes(&sp.Instructions)
		}
		return unknownField(key)
	})
}

func (d *planDecoder) rule(r *plan.PlanRule) error {
	return d.object(func(key string) error {
		switch key {
		case "path":
			return d.str(&r.Path)
		case "access":
			return d.str(&r.Access)
		case "optional":
			return d.bool(&r.Optional)
		case "origin":
			return d.str(&r.Origin)
		}
		return unknownField(key)
	})
}

func unknownField(key string) error { return fmt.Errorf("unknown field %q", key) }

// space skips JSON whitespace.
func (d *planDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// next returns the next byte after whitespace without consuming it; 0 at
// the end.
func (d *planDecoder) next() byte {
	d.space()
	if d.pos == len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// null consumes a null literal if one comes next.
func (d *planDecoder) null() bool {
	if d.next() == 'n' && d.literal("null") {
		return true
	}
	return false
}

// literal consumes lit if the data continues with it.
func (d *planDecoder) literal(lit string) bool {
	if len(d.data)-d.pos >= len(lit) && string(d.data[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return true
	}
	return false
}

func (d *planDecoder) expect(c byte) error {
	if got := d.next(); got != c {
		if got == 0 {
			return fmt.Errorf("unexpected end of the plan, want %q", c)
		}
		return fmt.Errorf("unexpected %q, want %q", got, c)
	}
	d.pos++
	return nil
}

// ptr decodes a value that may be null (left nil) with fn.
func (d *planDecoder) ptr(fn func() error) error {
	if d.null() {
		return nil
	}
	return fn()
}

// objectOrNull decodes an object into a struct that is not a pointer:
// null leaves it as it is, as encoding/json does.
func (d *planDecoder) objectOrNull(field func(key string) error) error {
	return d.ptr(func() error { return d.object(field) })
}

// object decodes an object, calling field for each key with the decoder
// at its value; field must consume the value. Each key may appear once.
func (d *planDecoder) object(field func(key string) error) error {
	var seen []string
	return d.sequence('{', '}', func() error {
		var key string
		if err := d.quoted(&key); err != nil {
			return err
		}
		for _, k := range seen {
			if k == key {
				return fmt.Errorf("field %q given twice", key)
			}
		}
		seen = append(seen, key)
		if err := d.expect(':'); err != nil {
			return err
		}
		return field(key)
	})
}

// list decodes an array into dst with elem, which decodes one element:
// null leaves dst nil, [] makes it empty (not nil, as encoding/json does).
func list[T any](d *planDecoder, dst *[]T, elem func(*T) error) error {
	if d.null() {
		return nil
	}
	*dst = []T{}
	return d.sequence('[', ']', func() error {
		var v T
		err := elem(&v)
		*dst = append(*dst, v)
		return err
	})
}

// sequence decodes the items between open and close, separated by
// commas, calling item for each.
func (d *planDecoder) sequence(open, close byte, item func() error) error {
	if err := d.expect(open); err != nil {
		return err
	}
	if d.next() == close {
		d.pos++
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		switch d.next() {
		case ',':
			d.pos++
		case close:
			d.pos++
			return nil
		default:
			return d.expect(close)
		}
	}
}

func (d *planDecoder) strings(dst *[]string) error { return list(d, dst, d.str) }

func (d *planDecoder) bool(dst *bool) error {
	switch {
	case d.null():
	case d.literal("true"):
		*dst = true
	case d.literal("false"):
		*dst = false
	default:
		return errors.New("want true or false")
	}
	return nil
}

// number returns the next integer literal: JSON's grammar without a
// fraction or exponent, which no integer field takes.
func (d *planDecoder) number() (string, error) {
	d.space()
	start := d.pos
	if d.pos < len(d.data) && d.data[d.pos] == '-' {
		d.pos++
	}
	digits := d.pos
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		d.pos++
	}
	switch {
	case d.pos == digits:
		return "", errors.New("want an integer")
	case d.data[digits] == '0' && d.pos-digits > 1:
		return "", errors.New("an integer with a leading zero")
	case d.pos < len(d.data) && (d.data[d.pos] == '.' || d.data[d.pos] == 'e' || d.data[d.pos] == 'E'):
		return "", errors.New("want an integer, not a fraction")
	}
	return string(d.data[start:d.pos]), nil
}

func (d *planDecoder) int(dst *int) error {
	if d.null() {
		return nil
	}
	s, err := d.number()
	if err != nil {
		return err
	}
	n, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return err
	}
	*dst = int(n)
	return nil
}

func (d *planDecoder) unsigned(bits int) (uint64, bool, error) {
	if d.null() {
		return 0, false, nil
	}
	s, err := d.number()
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.ParseUint(s, 10, bits)
	return n, err == nil, err
}

func (d *planDecoder) uint64(dst *uint64) error {
	n, ok, err := d.unsigned(64)
	if ok {
		*dst = n
	}
	return err
}

func (d *planDecoder) uint32(dst *uint32) error {
	n, ok, err := d.unsigned(32)
	if ok {
		*dst = uint32(n)
	}
	return err
}

// bytes decodes a base64 string (standard encoding, as encoding/json
// writes []byte).
func (d *planDecoder) bytes(dst *[]byte) error {
	if d.null() {
		return nil
	}
	var s string
	if err := d.str(&s); err != nil {
		return err
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, []byte(s))
	if err != nil {
		return fmt.Errorf("base64: %w", err)
	}
	*dst = b[:n]
	return nil
}

// str decodes a string, or leaves dst alone for null.
func (d *planDecoder) str(dst *string) error {
	if d.null() {
		return nil
	}
	return d.quoted(dst)
}

// quoted decodes a string (an object key: never null).
func (d *planDecoder) quoted(dst *string) error {
	if err := d.expect('"'); err != nil {
		return err
	}
	var out []byte
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			if out == nil {
				*dst = string(d.data[start:d.pos])
			} else {
				*dst = string(append(out, d.data[start:d.pos]...))
			}
			d.pos++
			return nil
		case c < 0x20:
			return errors.New("control character in a string")
		case c == '\\':
			out = append(out, d.data[start:d.pos]...)
			r, err := d.escape()
			if err != nil {
				return err
			}
			out = utf8.AppendRune(out, r)
			start = d.pos
		case c < utf8.RuneSelf:
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && size == 1 {
				return errors.New("invalid UTF-8 in a string")
			}
			d.pos += size
		}
	}
	return errors.New("unterminated string")
}

// escape decodes the escape sequence at pos (a backslash).
func (d *planDecoder) escape() (rune, error) {
	if d.pos+1 >= len(d.data) {
		return 0, errors.New("unterminated string")
	}
	c := d.data[d.pos+1]
	d.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := d.hex4()
		if err != nil {
			return 0, err
		}
		if !utf16.IsSurrogate(r) {
			return r, nil
		}
		if d.literal(`\u`) {
			r2, err := d.hex4()
			if err != nil {
				return 0, err
			}
			if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
				return dec, nil
			}
		}
		return 0, errors.New("lone UTF-16 surrogate in a string")
	}
	return 0, fmt.Errorf("invalid escape \\%c", c)
}

func (d *planDecoder) hex4() (rune, error) {
	if len(d.data)-d.pos < 4 {
		return 0, errors.New("short \\u escape")
	}
	n, err := strconv.ParseUint(string(d.data[d.pos:d.pos+4]), 16, 32)
	if err != nil {
		return 0, errors.New("invalid \\u escape")
	}
	d.pos += 4
	return rune(n), nil
}
