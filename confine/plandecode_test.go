package confine

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/moatsandbox/moat/policy/plan"
)

// fullPlan sets every field of a Plan.
func fullPlan(t testing.TB) *Plan {
	moat, err := MoatFilter()
	if err != nil {
		t.Fatal(err)
	}
	return &Plan{
		Version: PlanVersion, Mode: ModeReap,
		NetNS: &NetNS{FD: 7, Inode: 4026532000},
		Ready: &Ready{Inode: 10019371},
		Landlock: &plan.Plan{Compatibility: plan.BestEffort, EntrypointInterpreter: true, GPUDevices: true, Rules: []plan.PlanRule{
			{Path: "/usr", Access: plan.AccessRO, Optional: true, Origin: plan.OriginBaseline},
			{Path: "/srv/données \"x\"\\ \u2028 \U0001F600", Access: plan.AccessRW, Origin: plan.OriginPolicy},
		}},
		Seccomp:         []SeccompProgram{{Name: "container", Flags: 4, Instructions: moat.Instructions[:16]}, moat},
		Identity:        Identity{UID: 1000, GID: 1001, AdditionalGids: []uint32{44, 4294967295}, Username: "sandbox", Home: "/home/sandbox"},
		Capabilities:    &Capabilities{Bounding: []string{"CAP_NET_BIND_SERVICE", "CAP_KILL"}, Permitted: []string{"CAP_KILL"}, Inheritable: nil, Ambient: []string{"CAP_KILL"}},
		NoNewPrivileges: true,
		Env:             []string{"MOAT_SANDBOX=1", "HOME=/home/sandbox", "X=\t<&>"},
	}
}

// jsonPlan decodes data as ParsePlan did with encoding/json.
func jsonPlan(data []byte) (*Plan, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

func TestDecodePlanRoundTrip(t *testing.T) {
	want := fullPlan(t)
	for _, indent := range []bool{true, false} {
		var data []byte
		var err error
		if indent {
			data, err = want.Marshal()
		} else {
			data, err = json.Marshal(want)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParsePlan(data)
		if err != nil {
			t.Fatalf("indent=%v: %v", indent, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("indent=%v: decoded\n%+v\nwant\n%+v", indent, got, want)
		}
	}
}

// TestDecodePlanLikeJSON: documents both decoders read, read the same,
// including nulls, empty arrays and escapes Marshal does not write.
func TestDecodePlanLikeJSON(t *testing.T) {
	for _, doc := range []string{
		`{"version":1,"identity":{"uid":0,"gid":0}}`,
		` {"version" : 1 , "mode":null, "netns":null, "ready":{}, "landlock":{"rules":[]}, "seccomp":null, "identity":null, "capabilities":{"ambient":[]}, "env":[], "no_new_privileges":false} `,
		`{"version":1,"identity":{"uid":1,"gid":2,"additional_gids":[],"username":"\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\"}}`,
		`{"version":-0,"netns":{"fd":-3,"inode":0},"identity":{"uid":4294967295,"gid":0}}`,
		`{"version":1,"seccomp":[{"name":"x","flags":0,"instructions":"AAAA\nAAAA"},{"instructions":null}],"identity":{"uid":0,"gid":0}}`,
		`null`,
	} {
		want, werr := jsonPlan([]byte(doc))
		got, gerr := decodePlan([]byte(doc))
		if werr != nil || gerr != nil {
			t.Errorf("%s: encoding/json %v, decodePlan %v", doc, werr, gerr)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: decoded\n%+v\nencoding/json\n%+v", doc, got, want)
		}
	}
}

// TestDecodePlanRefuses: malformed documents, and the leniencies of
// encoding/json that decodePlan does not share.
func TestDecodePlanRefuses(t *testing.T) {
	for _, c := range []struct{ doc, err string }{
		{``, "unexpected end"},
		{`[]`, `unexpected '['`},
		{`{"version":1,}`, `unexpected '}', want '"'`},
		{`{"version":1 "mode":"reap"}`, `want '}'`},
		{`{"version":1}{}`, "data after the plan"},
		{`{"version":1} x`, "data after the plan"},
		{`{"Version":1}`, `unknown field "Version"`},
		{`{"version":1,"version":1}`, `field "version" given twice`},
		{`{"version":01}`, "leading zero"},
		{`{"version":1.0}`, "not a fraction"},
		{`{"version":1e0}`, "not a fraction"},
		{`{"version":"1"}`, "want an integer"},
		{`{"version":99999999999999999999}`, "out of range"},
		{`{"netns":{"inode":-1}}`, "invalid syntax"},
		{`{"identity":{"uid":4294967296}}`, "out of range"},
		{`{"mode":"re` + "\x00" + `ap"}`, "control character"},
		{`{"mode":"` + "\xff" + `"}`, "invalid UTF-8"},
		{`{"mode":"\ud800"}`, "lone UTF-16 surrogate"},
		{`{"mode":"\ud800\u0041"}`, "lone UTF-16 surrogate"},
		{`{"mode":"\x"}`, `invalid escape \x`},
		{`{"mode":"\u12`, "short \\u escape"},
		{`{"mode":"\u12zz"}`, "invalid \\u escape"},
		{`{"mode":"reap`, "unterminated string"},
		{`{"no_new_privileges":1}`, "want true or false"},
		{`{"seccomp":[{"instructions":[1,2]}]}`, `unexpected '[', want '"'`},
		{`{"seccomp":[{"instructions":"A"}]}`, "base64"},
		{`{"env":["a",]}`, `unexpected ']', want '"'`},
		{`{"env":"a"}`, `unexpected '"', want '['`},
		{`{null:1}`, `unexpected 'n', want '"'`},
	} {
		_, err := decodePlan([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: got %v, want an error with %q", c.doc, err, c.err)
		}
	}
}

// FuzzParsePlan: whatever decodePlan accepts, encoding/json (as ParsePlan
// used it) accepts too and decodes to the same Plan; and a decoded plan
// marshals to a document that decodes and marshals to itself.
func FuzzParsePlan(f *testing.F) {
	full, err := fullPlan(f).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte(`{"version":1,"identity":{"uid":0,"gid":0},"env":["A=\u00e9"]}`))
	f.Add([]byte(`{"version":1,"seccomp":[{"name":"x","instructions":"AAAAAAAAAAA="}],"identity":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodePlan(data)
		if err != nil {
			return
		}
		want, jerr := jsonPlan(data)
		if jerr != nil {
			t.Fatalf("decodePlan accepted what encoding/json refuses (%v): %q", jerr, data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded\n%+v\nencoding/json\n%+v", data, got, want)
		}
		// Marshal drops empty lists (omitempty), so compare documents.
		again, err := got.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodePlan(again)
		if err != nil {
			t.Fatalf("%q: marshalled again %q: %v", data, again, err)
		}
		if third, _ := back.Marshal(); !bytes.Equal(third, again) {
			t.Fatalf("%q: marshalled again %q, then %q", data, again, third)
		}
	})
}
