//go:build !chaostest

package config

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// A build without the chaostest tag has no test clock: the variable is
// refused with a usage error naming it, and the clock is time.Now.
func TestClockOffsetRefusedWithoutChaostestTag(t *testing.T) {
	_, err := Parse(nil, env(map[string]string{TestClockOffsetEnv: "-90s"}), io.Discard)
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("Parse with %s set: err = %v, want a *UsageError", TestClockOffsetEnv, err)
	}
	if !strings.Contains(err.Error(), TestClockOffsetEnv) || !strings.Contains(err.Error(), "chaostest") {
		t.Errorf("error does not name the variable and the build tag: %v", err)
	}
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TestClockOffset != 0 {
		t.Errorf("TestClockOffset = %s without the hook", c.TestClockOffset)
	}
	if d := time.Until(c.Now()); d > time.Second || d < -time.Second {
		t.Errorf("Now() is %s from time.Now", d)
	}
}
