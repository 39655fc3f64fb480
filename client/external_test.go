package client_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactonce/exactonce/internal/testnode"
)

// externalMain is a program of another module that uses the SDK as an
// application would: create, consume twice, tell the answers apart.
const externalMain = `package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/exactonce/exactonce/client"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(os.Getenv("EXACTONCE_ADDR"),
		client.WithCredentials(os.Getenv("EXACTONCE_CLIENT_ID"), os.Getenv("EXACTONCE_CLIENT_SECRET")))
	if err != nil {
		fmt.Println("new:", err)
		os.Exit(1)
	}
	a, err := c.Create(ctx, client.CreateRequest{Payload: []byte(` + "`" + `{"from":"another module"}` + "`" + `)})
	if err != nil {
		fmt.Println("create:", err)
		os.Exit(1)
	}
	got, err := c.ConsumeWithRetry(ctx, a.ActionID, nil, client.RetryPolicy{})
	if err != nil {
		fmt.Println("consume:", err)
		os.Exit(1)
	}
	_, err = c.Consume(ctx, a.ActionID, nil)
	var apiErr *client.APIError
	fmt.Printf("%s %v %v\n", got.Payload, errors.Is(err, client.ErrAlreadyUsed), errors.As(err, &apiErr) && apiErr.Status == 409)
}
`

// TestAnotherModuleBuildsAndUsesTheSDK builds a throwaway module that
// imports the SDK (the repository stands in for the published module
// through a replace directive), offline from the module cache, and runs
// it against a real node: the SDK is importable from outside, which
// internal/ never was.
func TestAnotherModuleBuildsAndUsesTheSDK(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goMod := "module example.com/sdkuser\n\ngo 1.26\n\nrequire github.com/exactonce/exactonce v0.0.0\n\nreplace github.com/exactonce/exactonce => " + repo + "\n"
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(goMod), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(externalMain), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sdkuser")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	// Offline: whatever the module needs comes from the local module
	// cache, never from a proxy or the checksum database.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build of a module importing the SDK: %v\n%s", err, out)
	}

	node := testnode.Start(t, testnode.Options{})
	run := exec.Command(bin)
	run.Env = append(os.Environ(), "EXACTONCE_ADDR="+node.URL, "EXACTONCE_CLIENT_ID="+node.ClientID, "EXACTONCE_CLIENT_SECRET="+node.ClientSecret)
	out, err := run.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != `{"from":"another module"} true true` {
		t.Fatalf("the other module's program: %v\n%s", err, out)
	}
}
