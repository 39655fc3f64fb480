//go:build !chaostest

package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/exactonce/exactonce/internal/config"
)

// A build without the chaostest tag refuses the test clock variable (exit
// 2, naming it) and mounts no test route.
func TestClockHookRefusedWithoutChaostestTag(t *testing.T) {
	var errb bytes.Buffer
	getenv := func(k string) string {
		if k == config.TestClockOffsetEnv {
			return "-30s"
		}
		return ""
	}
	code := run(context.Background(), []string{"--data-dir", t.TempDir()}, getenv, io.Discard, &errb)
	if code != 2 || !strings.Contains(errb.String(), config.TestClockOffsetEnv) {
		t.Errorf("exit %d, stderr %q; want 2 naming %s", code, errb.String(), config.TestClockOffsetEnv)
	}
	if testRoutes(nil, nil, nil) != nil {
		t.Error("a build without chaostest mounts test routes")
	}
}
