package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestStrictJSONCreate: a create body that encoding/json alone would take
// (a field name in another case, a duplicate key at any depth, invalid
// UTF-8, a lone surrogate, deep nesting) is 400 invalid_request naming the
// field, and nothing is proposed.
func TestStrictJSONCreate(t *testing.T) {
	e := newEnv(t, nil)
	var many strings.Builder
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&many, `"k%d":%d,`, i, i)
	}
	deep := strings.Repeat(`{"a":`, maxJSONDepth) + "1" + strings.Repeat("}", maxJSONDepth)
	for _, tc := range []struct {
		name, body, inMessage string
	}{
		{"PIN hides pin", `{"payload":{"v":1},"pin":"1234","PIN":null}`, `"PIN"`},
		{"case only", `{"Payload":{"v":1}}`, `did you mean "payload"`},
		{"duplicate pin", `{"payload":{"v":1},"pin":null,"pin":"1234"}`, `duplicate field "pin"`},
		{"duplicate in payload", `{"payload":{"v":1,"v":2}}`, `duplicate field "payload.v"`},
		{"duplicate deep in payload", `{"payload":{"x":[1,{"k":1,"k":2}]}}`, `duplicate field "payload.x[1].k"`},
		{"invalid UTF-8 in a value", "{\"payload\":{\"v\":\"a\xffb\"}}", `field "payload.v" is not valid UTF-8`},
		{"invalid UTF-8 in a key", "{\"payload\":{\"v\xc3\":1}}", `the name of "payload.v`},
		{"invalid UTF-8 in the pin", "{\"payload\":{},\"pin\":\"12\xe2\x82\"}", `field "pin" is not valid UTF-8`},
		{"lone surrogate pin", `{"payload":{},"pin":"\ud800abcd"}`, `field "pin" holds a \u escape of a lone UTF-16 surrogate`},
		{"lone low surrogate", `{"payload":{"s":"x\udc00"}}`, `field "payload.s" holds`},
		{"duplicate in a large object", `{"payload":{"o":{` + many.String() + `"k7":0}}}`, `duplicate field "payload.o.k7"`},
		{"escaped duplicate", `{"payload":{"ab":1,"\u0061b":2}}`, `duplicate field "payload.ab"`},
		{"too deep", `{"payload":` + deep + `}`, "nested deeper than 64 levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.b.applies.Load()
			r := e.do(req{method: "POST", path: "/v1/actions", body: tc.body, ctype: "application/json"})
			expect(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(r.str("message"), tc.inMessage) {
				t.Fatalf("message %q does not contain %q", r.str("message"), tc.inMessage)
			}
			if e.b.applies.Load() != before {
				t.Fatal("a rejected body was proposed")
			}
		})
	}
	// What stays accepted: a surrogate pair, escapes, 63 levels in payload.
	ok := strings.Repeat(`{"a":`, maxJSONDepth-2) + "1" + strings.Repeat("}", maxJSONDepth-2)
	for _, body := range []string{
		`{"payload":{"smile":"\ud83d\ude00","q":"\"\\u0041"},"pin":"1234"}`,
		`{"payload":` + ok + `}`,
		`{"payload":{"a":{"k":1},"b":{"k":1}},"pin":null}`,
	} {
		r := e.do(req{method: "POST", path: "/v1/actions", body: body, ctype: "application/json"})
		expect(t, r, http.StatusCreated, "")
	}
}

// TestStrictJSONOtherBodies: the consume, demo and admin create bodies get
// the same rules.
func TestStrictJSONOtherBodies(t *testing.T) {
	e := newEnv(t, nil)
	id := e.create(`{"payload":{"v":1}}`)
	for _, tc := range []struct {
		name string
		q    req
		want string
	}{
		{"consume duplicate in consumer", req{method: "POST", path: "/v1/actions/" + id + "/consume",
			body: `{"consumer":{"ip":"1","ip":"2"}}`}, `duplicate field "consumer.ip"`},
		{"consume Pin", req{method: "POST", path: "/v1/actions/" + id + "/consume", body: `{"Pin":"1234"}`}, `"Pin"`},
		{"demo duplicate", req{method: "POST", path: "/v1/demo", noAuth: true, body: `{"payload":{"a":1},"payload":{"a":2}}`}, `duplicate field "payload"`},
		{"admin Name", req{method: "POST", path: "/v1/admin/clients", noAuth: true,
			hdr: map[string]string{"Authorization": "Bearer " + e.admin}, body: `{"name":"a","Name":"b"}`}, `"Name"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.b.applies.Load()
			r := e.do(tc.q)
			expect(t, r, http.StatusBadRequest, "invalid_request")
			if !strings.Contains(r.str("message"), tc.want) {
				t.Fatalf("message %q does not contain %q", r.str("message"), tc.want)
			}
			if e.b.applies.Load() != before {
				t.Fatal("a rejected body was proposed")
			}
		})
	}
	// The action is still open: none of the above consumed it.
	expect(t, e.consume(id, ""), http.StatusOK, "")
}

func TestHasLoneSurrogate(t *testing.T) {
	for raw, want := range map[string]bool{
		`"\ud800"`:             true,
		`"\udfff"`:             true,
		`"\ud800\u0041"`:       true,
		`"\ud800\\udc00"`:      true,
		`"\\ud800"`:            false,
		`"\ud83d\ude00"`:       false,
		`: "\u00e9\ufffd"`:     false,
		`"\ud83d\ude00\ud800"`: true,
	} {
		if got := hasLoneSurrogate([]byte(raw)); got != want {
			t.Errorf("hasLoneSurrogate(%s) = %v, want %v", raw, got, want)
		}
	}
}

// BenchmarkDecodeStrict compares decodeStrict with the plain decode it
// wraps, on the bodies of a create, a consume and a create with a payload
// of about 16 KiB.
func BenchmarkDecodeStrict(b *testing.B) {
	var big bytes.Buffer
	big.WriteString(`{"payload":{`)
	for i := 0; i < 400; i++ {
		if i > 0 {
			big.WriteByte(',')
		}
		fmt.Fprintf(&big, `"key%03d":"value number %03d"`, i, i)
	}
	big.WriteString(`},"pin":"4711"}`)
	bodies := []struct {
		name string
		body []byte
		v    func() any
	}{
		{"create", []byte(`{"payload":{"voucher":"SAVE20","email":"a@example.com"},"active_at":"2030-01-02T10:00:00Z","expires_at":"2030-01-09T10:00:00Z","pin":"4711"}`), func() any { return &createRequest{} }},
		{"consume", []byte(`{"pin":"4711","consumer":{"ip":"203.0.113.9","userAgent":"Mozilla/5.0"}}`), func() any { return &consumeRequest{} }},
		{"create16KiB", big.Bytes(), func() any { return &createRequest{} }},
	}
	for _, bb := range bodies {
		b.Run(bb.name+"/plain", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				dec := json.NewDecoder(bytes.NewReader(bb.body))
				dec.DisallowUnknownFields()
				if err := dec.Decode(bb.v()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bb.name+"/walk", func(b *testing.B) {
			b.ReportAllocs()
			t := reflect.TypeOf(bb.v())
			for b.Loop() {
				if err := checkStrictJSON(bb.body, t); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bb.name+"/strict", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeStrict(bb.body, bb.v()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
