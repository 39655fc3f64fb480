package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/exactonce/exactonce/internal/buildinfo"
	"github.com/exactonce/exactonce/internal/testnode"
)

// nodeEnv is the environment that points the CLI at a test node.
func nodeEnv(n *testnode.Node) map[string]string {
	return map[string]string{
		"EXACTONCE_ADDR":          n.URL,
		"EXACTONCE_CLIENT_ID":     n.ClientID,
		"EXACTONCE_CLIENT_SECRET": n.ClientSecret,
	}
}

func TestExitCodesAgainstARealNode(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	env := nodeEnv(node)

	code, out, errs := runCLI(t, env, "", "create", "--payload", `{"u":1}`)
	if code != exitOK {
		t.Fatalf("create: exit %d: %s", code, errs)
	}
	var created struct {
		ActionID string `json:"actionId"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ActionID == "" {
		t.Fatalf("create printed %q: %v", out, err)
	}
	if code, out, errs := runCLI(t, env, "", "consume", created.ActionID); code != exitOK || !strings.Contains(out, `"u": 1`) {
		t.Fatalf("consume: exit %d out %q err %q", code, out, errs)
	}
	code, out, errs = runCLI(t, env, "", "consume", created.ActionID)
	if code != exitAPI || out != "" || !strings.Contains(errs, "already_used (HTTP 409)") {
		t.Errorf("second consume: exit %d out %q err %q; want %d and already_used", code, out, errs, exitAPI)
	}

	csv := filepath.Join(t.TempDir(), "batch.csv")
	if err := os.WriteFile(csv, []byte("payload_json,pin,active_at,expires_at\n\"{\"\"v\"\":1}\",,,\nnot json,,,\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI(t, env, "", "create", "--csv", csv)
	if code != exitPartial || !strings.Contains(out, `"failed": 1`) || !strings.Contains(errs, "1 of 2 rows failed") {
		t.Errorf("CSV with a failed row: exit %d out %q err %q; want %d, the results on stdout", code, out, errs, exitPartial)
	}
	good := filepath.Join(t.TempDir(), "good.csv")
	if err := os.WriteFile(good, []byte("payload_json,pin,active_at,expires_at\n\"{\"\"v\"\":2}\",,,\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, env, "", "create", "--csv", good); code != exitOK {
		t.Errorf("CSV without failed rows: exit %d err %q", code, errs)
	}

	bad := map[string]string{"EXACTONCE_ADDR": node.URL, "EXACTONCE_CLIENT_ID": node.ClientID, "EXACTONCE_CLIENT_SECRET": "sec_wrong"}
	if code, _, errs := runCLI(t, bad, "", "stats"); code != exitAPI || !strings.Contains(errs, "unauthorized") {
		t.Errorf("wrong secret: exit %d err %q", code, errs)
	}
	for _, args := range [][]string{{"stats", "--nope"}, {"nope"}, {"-o", "yaml", "stats"}, {"get"}} {
		if code, _, errs := runCLI(t, env, "", args...); code != exitUsage {
			t.Errorf("%v: exit %d err %q, want %d", args, code, errs, exitUsage)
		}
	}

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	if code, _, errs := runCLI(t, nil, "", "--addr", closed.URL, "stats"); code != exitUnknown || !strings.Contains(errs, "connection failed") {
		t.Errorf("nothing listening: exit %d err %q, want %d", code, errs, exitUnknown)
	}
}

func TestUnavailableExitsThree(t *testing.T) {
	url, _ := fakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"outcome_unknown","message":"the write reached the leader but its fate is unknown"}`)
	})
	code, _, errs := runCLI(t, nil, "", "--addr", url, "--idempotency-key", "k1", "consume", "act_1")
	if code != exitUnknown || !strings.Contains(errs, "outcome_unknown (HTTP 503)") {
		t.Errorf("503 outcome_unknown: exit %d err %q, want %d", code, errs, exitUnknown)
	}
}

func TestOutputFormats(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	env := nodeEnv(node)
	for range 2 {
		if code, _, errs := runCLI(t, env, "", "create", "--payload", `{"u":1}`, "--pin", "1234"); code != exitOK {
			t.Fatalf("create: exit %d: %s", code, errs)
		}
	}
	_, def, _ := runCLI(t, env, "", "stats")
	_, asJSON, _ := runCLI(t, env, "", "-o", "json", "stats")
	if def != asJSON || !strings.HasPrefix(def, "{\n  \"total\": 2,") {
		t.Errorf("-o json %q differs from the default %q, or is not the pretty JSON", asJSON, def)
	}
	code, out, errs := runCLI(t, env, "", "list", "-o", "table")
	if code != exitOK {
		t.Fatalf("list -o table: exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	// The actions' table, then the page's nextToken.
	if len(lines) != 6 || !regexp.MustCompile(`^ACTION_ID +STATE +ACTIVE_AT +EXPIRES_AT +CREATED_AT +PIN_REQUIRED +FAILED_PIN_ATTEMPTS$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^\nFIELD +VALUE\nnextToken +-$`).MatchString(strings.Join(lines[3:], "\n")) {
		t.Fatalf("list -o table:\n%s", out)
	}
	for _, l := range lines[1:3] {
		if !regexp.MustCompile(`^act_\S+ +active +\S+ +\S+ +\S+ +true +0$`).MatchString(l) {
			t.Errorf("list -o table row %q", l)
		}
	}
	code, out, _ = runCLI(t, env, "", "stats", "-o", "table")
	if code != exitOK || !regexp.MustCompile(`(?m)^FIELD +VALUE\ntotal +2\nbyState +\{"pending":0,"active":2,`).MatchString(out) {
		t.Errorf("stats -o table:\n%s", out)
	}
	if code, out, _ := runCLI(t, nil, "", "-o", "json", "keygen"); code != exitOK || !regexp.MustCompile(`^\{\n  "key": "[A-Za-z0-9+/]{43}="\n\}\n$`).MatchString(out) {
		t.Errorf("keygen -o json: exit %d %q", code, out)
	}
}

func TestVersionCommand(t *testing.T) {
	node := testnode.Start(t, testnode.Options{})
	info := buildinfo.Get()
	code, out, errs := runCLI(t, nodeEnv(node), "", "version")
	want := "client: exactonce " + info.String() + "\nserver: exactonced " + info.Version + " (" + node.URL + ")\n"
	if code != exitOK || out != want {
		t.Errorf("version: exit %d out %q err %q, want %q", code, out, errs, want)
	}
	code, out, _ = runCLI(t, nodeEnv(node), "", "version", "-o", "json")
	var rep versionReport
	if err := json.Unmarshal([]byte(out), &rep); code != exitOK || err != nil || rep.Client != info || rep.Server.Version != info.Version {
		t.Errorf("version -o json: exit %d %q", code, out)
	}

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	code, out, errs = runCLI(t, nil, "", "--addr", closed.URL, "version")
	if code != exitOK || out != "client: exactonce "+info.String()+"\n" || !strings.Contains(errs, "not reached") {
		t.Errorf("version without a server: exit %d out %q err %q", code, out, errs)
	}
	if code, out, _ := runCLI(t, nil, "", "--version"); code != exitOK || out != "exactonce "+info.String()+"\n" {
		t.Errorf("--version: exit %d %q", code, out)
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	code, out, _ := runCLI(t, nil, "", "--help")
	if code != exitOK || !strings.Contains(out, exitCodesHelp) || !strings.Contains(out, "-o, --output") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}
