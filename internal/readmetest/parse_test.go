package readmetest

import (
	"strings"
	"testing"
)

// The README's conventions, read as doc.go states them.
func TestStepsAndAnswers(t *testing.T) {
	blocks, err := parseBlocks("intro\n\n<!-- readme-test: skip: fixed ports -->\n```sh\nmake cluster\n```\n\n```sh\n" +
		"curl -s a \\\n  -d x\n# 201 {\"a\":1}\n# prose, not an answer\nexport ACT=act_...   # the id\nbin/x get\n# {\"b\":...}\n# {\"c\":2}\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].skip != "fixed ports" || blocks[1].skip != "" {
		t.Fatalf("blocks %+v", blocks)
	}
	steps := blocks[1].steps()
	if len(steps) != 3 {
		t.Fatalf("steps %+v", steps)
	}
	if steps[0].command != "curl -s a \\\n  -d x" || strings.Join(steps[0].expect, "|") != `201 {"a":1}` {
		t.Errorf("step 0 %+v", steps[0])
	}
	if len(steps[1].expect) != 0 || strings.Join(steps[2].expect, "|") != `{"b":...}|{"c":2}` {
		t.Errorf("steps 1, 2: %+v %+v", steps[1], steps[2])
	}
	if _, err := parseBlocks("```sh\nopen\n"); err == nil {
		t.Error("an unclosed block is accepted")
	}
}

func TestPaste(t *testing.T) {
	printed := map[string]string{"ID": "export ID=cl_real"}
	got, err := paste("export ID=cl_...\nexport ACT=act_...   # the id\necho $ACT", printed,
		[]string{`{"actionId":"act_old"}`, `{"actionId":"act_new1","other":"act_new2"}`, "no id here"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "export ID=cl_real\nexport ACT=act_new1   # the id\necho $ACT"; got != want {
		t.Fatalf("paste:\n%s\nwant\n%s", got, want)
	}
	if _, err := paste("export CL=cl_...", nil, []string{"nothing"}); err == nil {
		t.Error("a placeholder with no answer to copy from is accepted")
	}
}

func TestCheck(t *testing.T) {
	curl := step{expect: []string{`201 {"actionId":"act_...","pinRequired":false}`}}
	for _, tc := range []struct {
		s    step
		r    result
		fail bool
	}{
		{curl, result{stdout: []byte("{\"actionId\":\"act_x\",\"pinRequired\":false}\n201\n")}, false},
		{curl, result{stdout: []byte("{\"actionId\":\"act_x\",\"pinRequired\":false}\n200\n")}, true},
		{curl, result{stdout: []byte("{\"actionId\":\"act_x\",\"pinRequired\":true}\n201\n")}, true},
		{curl, result{stdout: []byte("{\"actionId\":\"act_x\",\"pinRequired\":false}")}, true}, // no status
		{step{expect: []string{`{"a":...}`, `{"b":1}`}}, result{stdout: []byte("{\n  \"a\": 5\n}\n{\"b\": 1}\n")}, false},
		{step{expect: []string{`{"a":...}`, `{"b":1}`}}, result{stdout: []byte("{\"a\": 5}\n")}, true},
		{step{expect: []string{`error: already_used (HTTP 409): ...`}}, result{code: 1, stderr: []byte("error: already_used (HTTP 409): used\n{}")}, false},
		{step{expect: []string{`error: already_used (HTTP 409): ...`}}, result{code: 0}, true},
		{step{}, result{code: 2}, true},
		{step{}, result{}, false},
	} {
		if err := check(tc.s, tc.r); (err != nil) != tc.fail {
			t.Errorf("check(%q, %q): %v, want failure %v", tc.s.expect, tc.r.stdout, err, tc.fail)
		}
	}
}
