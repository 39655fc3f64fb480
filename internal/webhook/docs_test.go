package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docsPage is the receiver's page whose snippets the test runs.
const docsPage = "../../docs/webhooks.md"

// fencedBlock returns the first ```lang block of the markdown page.
func fencedBlock(t *testing.T, page []byte, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(string(page), "\n```"+lang+"\n")
	if !ok {
		t.Fatalf("%s has no ```%s block", docsPage, lang)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatalf("%s: the ```%s block does not end", docsPage, lang)
	}
	return block + "\n"
}

// docsCase is one delivery handed to a snippet, with the answer it must give.
type docsCase struct {
	Name    string            `json:"name"`
	Secret  string            `json:"secret"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	want    bool
}

// Drivers feed the cases (JSON on stdin) to each language's verify and
// print one "true" or "false" per case.
const (
	pythonDriver = `
import json, sys
for c in json.load(sys.stdin):
    print("true" if verify(c["secret"], c["headers"], c["body"].encode()) else "false")
`
	nodeDriver = `
const cases = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
for (const c of cases) console.log(verify(c.secret, c.headers, Buffer.from(c.body, "utf8")) ? "true" : "false");
`
	goDriver = `package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	var cases []struct {
		Secret  string
		Headers map[string]string
		Body    string
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for _, c := range cases {
		h := http.Header{}
		for k, v := range c.Headers {
			h.Set(k, v)
		}
		fmt.Println(verify(c.Secret, h, []byte(c.Body)))
	}
}
`
)

// TestDocsVerifiersAcceptOurSignatures runs the Go, Python and Node
// snippets of docs/webhooks.md on deliveries signed by this package: they
// accept the genuine ones and refuse the others. A language whose tool is
// not installed is skipped.
func TestDocsVerifiersAcceptOurSignatures(t *testing.T) {
	page, err := os.ReadFile(docsPage)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := `{"id":"evt_0123","type":"action.consumed","createdAt":"2026-12-07T04:00:00.000Z","data":{"actionId":"act_x","state":"consumed"}}`
	deliver := func(name string, at time.Time, verifyWith Secret, signWith ...Secret) docsCase {
		sig, err := Sign("evt_0123", at, []byte(body), signWith...)
		if err != nil {
			t.Fatal(err)
		}
		return docsCase{Name: name, Secret: verifyWith.Encode(), Body: body, Headers: map[string]string{
			HeaderID: "evt_0123", HeaderTimestamp: strconv.FormatInt(at.Unix(), 10), HeaderSignature: sig,
		}}
	}
	cases := []docsCase{
		deliver("valid", now, ours, ours),
		deliver("rotation: only the second signature is ours", now, ours, other, ours),
		deliver("wrong secret", now, other, ours),
		deliver("ten minutes old", now.Add(-10*time.Minute), ours, ours),
		deliver("ten minutes ahead", now.Add(10*time.Minute), ours, ours),
	}
	cases[0].want, cases[1].want = true, true
	changed := deliver("changed body", now, ours, ours)
	changed.Body = strings.Replace(changed.Body, "act_x", "act_y", 1)
	missing := deliver("no signature header", now, ours, ours)
	delete(missing.Headers, HeaderSignature)
	badTimestamp := deliver("timestamp not a number", now, ours, ours)
	badTimestamp.Headers[HeaderTimestamp] = "soon"
	cases = append(cases, changed, missing, badTimestamp)
	input, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}

	run := func(t *testing.T, cmd *exec.Cmd) {
		cmd.Stdin = bytes.NewReader(input)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
		}
		got := strings.Fields(string(out))
		if len(got) != len(cases) {
			t.Fatalf("%d answers for %d cases: %q", len(got), len(cases), out)
		}
		for i, c := range cases {
			if got[i] != strconv.FormatBool(c.want) {
				t.Errorf("%s: verify answered %s, want %v", c.Name, got[i], c.want)
			}
		}
	}
	tool := func(t *testing.T, name string) string {
		path, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("%s not installed", name)
		}
		return path
	}
	dir := t.TempDir()
	write := func(t *testing.T, name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("python", func(t *testing.T) {
		python := tool(t, "python3")
		run(t, exec.Command(python, write(t, "verify.py", fencedBlock(t, page, "python")+pythonDriver)))
	})
	t.Run("node", func(t *testing.T) {
		node := tool(t, "node")
		run(t, exec.Command(node, write(t, "verify.js", fencedBlock(t, page, "js")+nodeDriver)))
	})
	t.Run("go", func(t *testing.T) {
		goTool := tool(t, "go")
		snippet := write(t, "verify.go", "package main\n\n"+fencedBlock(t, page, "go"))
		driver := write(t, "main.go", goDriver)
		cmd := exec.Command(goTool, "run", snippet, driver)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=")
		run(t, cmd)
	})
}
