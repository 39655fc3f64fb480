package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevExportsPasteIntoBash: the lines a dev node prints, pasted into
// bash as printed, set API, ID, SECRET and the admin token read from its
// file, even from a path a shell would split or expand.
func TestDevExportsPasteIntoBash(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "it's a $dir")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(token, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := devExports("http://127.0.0.1:8080", &devClient{ClientID: "cl_abc", ClientSecret: "sec_x-Y_z"}, token)
	if strings.Contains(out, "tok-123") {
		t.Fatalf("the admin token itself is printed:\n%s", out)
	}
	var paste []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "export ") {
			paste = append(paste, l)
		}
	}
	if len(paste) != 4 {
		t.Fatalf("want 4 export lines, got:\n%s", out)
	}
	cmd := exec.Command("bash", "-c", strings.Join(paste, "\n")+"\nprintf '%s|%s|%s|%s' \"$API\" \"$ID\" \"$SECRET\" \"$EXACTONCE_ADMIN_TOKEN\"")
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	if want := "http://127.0.0.1:8080|cl_abc|sec_x-Y_z|tok-123"; string(got) != want {
		t.Fatalf("pasted lines give %q, want %q; lines:\n%s", got, want, out)
	}
	if strings.Contains(devExports("http://x", &devClient{ClientID: "cl_a", ClientSecret: "sec_b"}, ""), "ADMIN_TOKEN") {
		t.Error("an admin token given by flag or file gets a line")
	}
}
