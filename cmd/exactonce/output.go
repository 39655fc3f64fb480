package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode"
)

// Output formats of -o. formatDefault is each command's own default:
// pretty JSON for the API commands, plain text for keygen and version.
const (
	formatDefault = ""
	formatJSON    = "json"
	formatTable   = "table"
)

// field is one key of a JSON object, in the order the server sent it.
type field struct {
	key   string
	value any // string, json.Number, bool, nil, []field (object) or []any
}

// decodeOrdered decodes one JSON value keeping the order of object keys,
// so that a table shows the columns in the order of the API's answers.
func decodeOrdered(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, fmt.Errorf("decode the answer: %w", err)
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			var obj []field
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key %v is not a string", kt)
				}
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				obj = append(obj, field{key, v})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			if obj == nil {
				obj = []field{}
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return arr, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// cell renders a value in one table cell: scalars as they are, "-" for
// null, objects and arrays as compact JSON.
func cell(v any) string {
	switch t := v.(type) {
	case nil:
		return "-"
	case string:
		if t == "" {
			return "-"
		}
		return t
	case json.Number:
		return t.String()
	case bool:
		return fmt.Sprint(t)
	default:
		return compact(v)
	}
}

// compact renders an ordered value back into compact JSON.
func compact(v any) string {
	var b strings.Builder
	var write func(v any)
	write = func(v any) {
		switch t := v.(type) {
		case []field:
			b.WriteByte('{')
			for i, f := range t {
				if i > 0 {
					b.WriteByte(',')
				}
				k, _ := json.Marshal(f.key)
				b.Write(k)
				b.WriteByte(':')
				write(f.value)
			}
			b.WriteByte('}')
		case []any:
			b.WriteByte('[')
			for i, e := range t {
				if i > 0 {
					b.WriteByte(',')
				}
				write(e)
			}
			b.WriteByte(']')
		default:
			e, _ := json.Marshal(t)
			b.Write(e)
		}
	}
	write(v)
	return b.String()
}

// header turns a JSON key into a column title: actionId is ACTION_ID.
func header(key string) string {
	var b strings.Builder
	for i, r := range key {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// isRows reports whether v is a non-empty array of objects: a table of rows.
func isRows(v any) ([][]field, bool) {
	arr, ok := v.([]any)
	if !ok {
		return nil, false
	}
	rows := make([][]field, 0, len(arr))
	for _, e := range arr {
		obj, ok := e.([]field)
		if !ok {
			return nil, false
		}
		rows = append(rows, obj)
	}
	return rows, true
}

// writeTable renders a JSON answer as text tables: an object's scalar
// fields as FIELD/VALUE lines, and each of its arrays of objects (the
// actions of a list, the rows of a CSV batch, the clients, the cluster's
// members) as a table with a column per key.
func writeTable(w io.Writer, raw []byte) error {
	v, err := decodeOrdered(raw)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if rows, ok := isRows(v); ok {
		writeRows(tw, rows)
		return tw.Flush()
	}
	obj, ok := v.([]field)
	if !ok {
		fmt.Fprintln(tw, cell(v))
		return tw.Flush()
	}
	// Blocks in the order of the answer: a run of scalar fields is one
	// FIELD/VALUE block, each array of objects a table of its own.
	inFields, wrote := false, false
	for _, f := range obj {
		rows, isTable := isRows(f.value)
		if isTable || !inFields {
			if wrote {
				fmt.Fprintln(tw)
			}
			wrote = true
		}
		if isTable {
			inFields = false
			if len(rows) == 0 {
				fmt.Fprintf(tw, "(no %s)\n", f.key)
			} else {
				writeRows(tw, rows)
			}
			continue
		}
		if !inFields {
			fmt.Fprintln(tw, "FIELD\tVALUE")
			inFields = true
		}
		fmt.Fprintf(tw, "%s\t%s\n", f.key, cell(f.value))
	}
	return tw.Flush()
}

// writeRows writes one table: the columns are every key of the rows, in
// the order they first appear.
func writeRows(w io.Writer, rows [][]field) {
	var cols []string
	seen := map[string]bool{}
	for _, r := range rows {
		for _, f := range r {
			if !seen[f.key] {
				seen[f.key] = true
				cols = append(cols, f.key)
			}
		}
	}
	titles := make([]string, len(cols))
	for i, c := range cols {
		titles[i] = header(c)
	}
	fmt.Fprintln(w, strings.Join(titles, "\t"))
	for _, r := range rows {
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = "-"
			for _, f := range r {
				if f.key == c {
					vals[i] = cell(f.value)
				}
			}
		}
		fmt.Fprintln(w, strings.Join(vals, "\t"))
	}
}
