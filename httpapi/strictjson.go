package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of objects and arrays in a JSON request
// body. encoding/json allows 10,000 levels; no request of this API needs
// more than a few, and the strict walk below recurses once per level.
const maxJSONDepth = 64

// DecodeStrictJSON decodes one JSON object from body into v under the
// API's strict rules (docs/api.md, "Strict JSON"): field names match
// exactly (case-sensitive) and no other field is allowed, no object
// holds a key twice at any depth, the body is valid UTF-8 with no lone
// UTF-16 surrogate escapes, nesting stays within 64 levels, and nothing
// follows the object. The error message names the offending field. Extra
// handlers mounted through Config.Extra use it to decode their bodies.
func DecodeStrictJSON(body []byte, v any) error { return decodeStrict(body, v) }

// checkStrictJSON walks body byte by byte and enforces what encoding/json
// lets through: a key matching a field only when the case differs,
// duplicate keys (the last one silently wins), invalid UTF-8 and lone
// surrogates (silently replaced by U+FFFD), and deep nesting. t is the
// type decoded into: the keys of a struct are checked against its json
// field names, everything else (json.RawMessage, maps, any) takes any key.
//
// body must already have been decoded by encoding/json (decodeStrict does
// so first), so it is one well-formed JSON value: the walk only has to
// find the boundaries of strings, not to validate the grammar, which keeps
// it a fraction of the cost of the decode (BenchmarkDecodeStrict). It
// still fails, rather than panics, on anything unexpected.
func checkStrictJSON(body []byte, t reflect.Type) error {
	w := strictWalker{body: body, badUTF8: -1}
	if !utf8.Valid(body) {
		w.badUTF8 = firstInvalidUTF8(body)
	}
	if err := w.value(t, 0); err != nil {
		return err
	}
	if w.badUTF8 >= 0 {
		// Outside any string: encoding/json would have rejected it.
		return fmt.Errorf("the body is not valid UTF-8 (byte offset %d)", w.badUTF8)
	}
	return nil
}

// errMalformed is returned when the walk meets what a decoded body cannot
// hold; decodeStrict never lets such a body reach it.
var errMalformed = errors.New("malformed JSON")

// strictWalker is the state of one checkStrictJSON walk.
type strictWalker struct {
	body []byte
	pos  int
	// badUTF8 is the offset of the first byte that is not valid UTF-8,
	// -1 when there is none.
	badUTF8 int
	// path is the way from the top to the value being walked; it is only
	// spelled out for an error message.
	path []pathSeg
}

// pathSeg is one step of a path: a key or an array index.
type pathSeg struct {
	key   []byte // raw key text, without quotes; nil for an index
	index int
}

// pathString spells the current path as in "payload.items[2].name".
func (w *strictWalker) pathString() string {
	var b strings.Builder
	for _, q := range w.path {
		if q.key == nil {
			b.WriteString("[" + strconv.Itoa(q.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(keyString(q.key))
	}
	return b.String()
}

// keyString decodes a raw key (escapes included).
func keyString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
		return string(raw)
	}
	return s
}

func (w *strictWalker) skipSpace() {
	for w.pos < len(w.body) {
		switch w.body[w.pos] {
		case ' ', '\t', '\n', '\r':
			w.pos++
		default:
			return
		}
	}
}

// value checks the JSON value at w.pos, reached by path, expected to
// decode into t (nil: any).
func (w *strictWalker) value(t reflect.Type, depth int) error {
	w.skipSpace()
	if w.pos >= len(w.body) {
		return errMalformed
	}
	switch w.body[w.pos] {
	case '{', '[':
		if depth >= maxJSONDepth {
			return fmt.Errorf("%s is nested deeper than %d levels", fieldOrBody(w.pathString()), maxJSONDepth)
		}
		if w.body[w.pos] == '{' {
			return w.object(t, depth+1)
		}
		return w.array(elemType(t), depth+1)
	case '"':
		start := w.pos
		if err := w.skipString(); err != nil {
			return err
		}
		return w.checkString(false, start, w.pos)
	default: // a number, true, false or null
		for w.pos < len(w.body) {
			switch w.body[w.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return nil
			}
			w.pos++
		}
		return nil
	}
}

// object checks the object at w.pos ('{').
func (w *strictWalker) object(t reflect.Type, depth int) error {
	st := structType(t)
	w.pos++
	// Most objects are small: their keys are compared as they come. The
	// keys of a larger object are sorted once at its end.
	var seenBuf [16][]byte
	seen := seenBuf[:0]
	w.path = append(w.path, pathSeg{})
	defer func() { w.path = w.path[:len(w.path)-1] }()
	self := len(w.path) - 1
	for first := true; ; first = false {
		w.skipSpace()
		if w.pos >= len(w.body) {
			return errMalformed
		}
		if w.body[w.pos] == '}' {
			w.pos++
			return w.checkSortedKeys(seen, self)
		}
		if !first {
			if w.body[w.pos] != ',' {
				return errMalformed
			}
			w.pos++
			w.skipSpace()
		}
		start := w.pos
		if w.pos >= len(w.body) || w.body[w.pos] != '"' {
			return errMalformed
		}
		if err := w.skipString(); err != nil {
			return err
		}
		raw := w.body[start+1 : w.pos-1]
		w.path[self] = pathSeg{key: raw}
		if err := w.checkString(true, start, w.pos); err != nil {
			return err
		}
		key := raw
		if bytes.IndexByte(raw, '\\') >= 0 {
			key = []byte(keyString(raw))
		}
		if len(seen) < len(seenBuf) {
			for _, k := range seen {
				if bytes.Equal(k, key) {
					return fmt.Errorf("duplicate field %q", w.pathString())
				}
			}
		}
		seen = append(seen, key)
		var ft reflect.Type
		if st != nil {
			var ok bool
			if ft, ok = fieldType(st, key); !ok {
				return unknownField(st, w.pathString(), string(key))
			}
		}
		w.skipSpace()
		if w.pos >= len(w.body) || w.body[w.pos] != ':' {
			return errMalformed
		}
		w.pos++
		if err := w.value(ft, depth); err != nil {
			return err
		}
	}
}

// array checks the array at w.pos ('[').
func (w *strictWalker) array(elem reflect.Type, depth int) error {
	w.pos++
	w.path = append(w.path, pathSeg{})
	defer func() { w.path = w.path[:len(w.path)-1] }()
	self := len(w.path) - 1
	for i := 0; ; i++ {
		w.skipSpace()
		if w.pos >= len(w.body) {
			return errMalformed
		}
		if w.body[w.pos] == ']' {
			w.pos++
			return nil
		}
		if i > 0 {
			if w.body[w.pos] != ',' {
				return errMalformed
			}
			w.pos++
		}
		w.path[self] = pathSeg{index: i}
		if err := w.value(elem, depth); err != nil {
			return err
		}
	}
}

// skipString moves w.pos past the string that starts at w.pos.
func (w *strictWalker) skipString() error {
	for i := w.pos + 1; i < len(w.body); i++ {
		switch w.body[i] {
		case '\\':
			i++
		case '"':
			w.pos = i + 1
			return nil
		}
	}
	return errMalformed
}

// checkString rejects the string at body[start:end] (quotes included),
// the value at path or (isKey) the name of its last key, when it holds the
// first invalid UTF-8 byte of the body, or a lone surrogate escape.
func (w *strictWalker) checkString(isKey bool, start, end int) error {
	var problem string
	switch raw := w.body[start:end]; {
	case w.badUTF8 >= start && w.badUTF8 < end:
		problem = fmt.Sprintf("is not valid UTF-8 (byte offset %d)", w.badUTF8)
	case bytes.Contains(raw, []byte(`\u`)) && hasLoneSurrogate(raw):
		problem = `holds a \u escape of a lone UTF-16 surrogate`
	default:
		return nil
	}
	if isKey {
		return fmt.Errorf("the name of %q %s", w.pathString(), problem)
	}
	return fmt.Errorf("%s %s", fieldOrBody(w.pathString()), problem)
}

// checkSortedKeys finds a duplicate among the keys of an object too large
// to have been checked key by key (see object); self is the object's
// place in w.path.
func (w *strictWalker) checkSortedKeys(keys [][]byte, self int) error {
	if len(keys) <= 16 {
		return nil
	}
	slices.SortFunc(keys, bytes.Compare)
	for i := 1; i < len(keys); i++ {
		if bytes.Equal(keys[i-1], keys[i]) {
			w.path[self] = pathSeg{key: keys[i]}
			return fmt.Errorf("duplicate field %q", w.pathString())
		}
	}
	return nil
}

// fieldOrBody names path in a message: the field, or the body itself.
func fieldOrBody(path string) string {
	if path == "" {
		return "the body"
	}
	return "field " + strconv.Quote(path)
}

// firstInvalidUTF8 is the offset of the first byte of b that does not start
// a valid UTF-8 encoding.
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// hasLoneSurrogate reports whether the raw JSON text raw (one string
// token, possibly with leading separators) holds a \u escape of a UTF-16
// surrogate that is not part of a high-low pair.
func hasLoneSurrogate(raw []byte) bool {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		if i+1 < len(raw) && raw[i+1] != 'u' {
			i++ // a two-character escape such as \\ or \"
			continue
		}
		r, ok := hex4(raw, i+2)
		if !ok {
			continue
		}
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			lo, ok := rune(0), false
			if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
				lo, ok = hex4(raw, i+8)
			}
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 11
		default:
			i += 5
		}
	}
	return false
}

// hex4 decodes the four hex digits at raw[i:].
func hex4(raw []byte, i int) (rune, bool) {
	if i+4 > len(raw) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(raw[i:i+4]), 16, 32)
	return rune(n), err == nil
}

// structType is t without pointers when it is a struct decoded by field
// name, nil when t takes any key (nil, json.RawMessage, a map, an
// interface).
func structType(t reflect.Type) reflect.Type {
	t = deref(t)
	if t == nil || t == rawMessageType || t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// rawMessageType takes any JSON value.
var rawMessageType = reflect.TypeFor[json.RawMessage]()

// jsonName is the name encoding/json decodes struct field f by, "" for a
// field it skips.
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

// fieldType is the type of st's field named exactly key. The structs
// decoded here have a handful of fields: a scan costs less than a map.
func fieldType(st reflect.Type, key []byte) (reflect.Type, bool) {
	for i := 0; i < st.NumField(); i++ {
		f := st.Field(i)
		if n := jsonName(f); n != "" && n == string(key) {
			return f.Type, true
		}
	}
	return nil, false
}

// unknownField is the error for key, named child in messages, which names
// no field of st; a name that differs from a field only in case says so,
// since encoding/json would have taken it.
func unknownField(st reflect.Type, child, key string) error {
	for i := 0; i < st.NumField(); i++ {
		if n := jsonName(st.Field(i)); n != "" && strings.EqualFold(n, key) {
			return fmt.Errorf("unknown field %q (field names are case-sensitive: did you mean %q?)", child, n)
		}
	}
	return fmt.Errorf("unknown field %q", child)
}

// elemType is the element type of a slice or array type, nil otherwise.
func elemType(t reflect.Type) reflect.Type {
	t = deref(t)
	if t == nil || t == rawMessageType {
		return nil
	}
	if k := t.Kind(); k == reflect.Slice || k == reflect.Array {
		return t.Elem()
	}
	return nil
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
