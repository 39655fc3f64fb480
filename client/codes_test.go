package client

import (
	"errors"
	"os"
	"regexp"
	"testing"
)

// TestEveryDocumentedCodeHasASentinel reads the error table of
// docs/api.md: each code there must have its sentinel, matched by an
// *APIError of that code under errors.Is, and no sentinel may be missing
// from the table.
func TestEveryDocumentedCodeHasASentinel(t *testing.T) {
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([0-9]{3}) \\|").FindAllSubmatch(doc, -1)
	if len(rows) < 20 {
		t.Fatalf("found %d rows in docs/api.md's error table; has its layout changed?", len(rows))
	}
	documented := map[string]bool{}
	for _, r := range rows {
		code := string(r[1])
		documented[code] = true
		var sentinel error
		for _, s := range codes {
			if string(s.(codeError)) == code {
				sentinel = s
			}
		}
		if sentinel == nil {
			t.Errorf("docs/api.md documents %q (HTTP %s) but the SDK has no sentinel for it", code, r[2])
			continue
		}
		if !errors.Is(&APIError{Code: code}, sentinel) {
			t.Errorf("an APIError %q does not match its sentinel", code)
		}
	}
	for _, s := range codes {
		if !documented[string(s.(codeError))] {
			t.Errorf("sentinel %v is not in docs/api.md's error table", s)
		}
	}
	if errors.Is(&APIError{Code: "already_used"}, ErrExpired) || errors.Is(&APIError{}, ErrInternal) {
		t.Errorf("an APIError matches another code's sentinel")
	}
}
