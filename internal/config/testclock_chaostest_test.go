//go:build chaostest

package config

import (
	"io"
	"testing"
	"time"
)

func TestClockOffsetFromEnvOnly(t *testing.T) {
	c, err := Parse(nil, env(map[string]string{TestClockOffsetEnv: "-90s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TestClockOffset != -90*time.Second {
		t.Errorf("TestClockOffset = %s", c.TestClockOffset)
	}
	if d := time.Until(c.Now()); d > -89*time.Second || d < -91*time.Second {
		t.Errorf("Now() is %s from time.Now, want about -90s", d)
	}
	if _, err := Parse(nil, env(map[string]string{TestClockOffsetEnv: "later"}), io.Discard); err == nil {
		t.Errorf("a bad clock offset was accepted")
	}
}

func TestClockOffsetJumpsAtRuntime(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Now()); d > time.Second || d < -time.Second {
		t.Errorf("Now() is %s from time.Now without an offset", d)
	}
	if prev := c.SetTestClockOffset(45 * time.Second); prev != 0 {
		t.Errorf("previous offset = %s, want 0", prev)
	}
	if d := time.Until(c.Now()); d < 44*time.Second || d > 46*time.Second {
		t.Errorf("after a +45s jump Now() is %s from time.Now", d)
	}
	if prev := c.SetTestClockOffset(-20 * time.Second); prev != 45*time.Second {
		t.Errorf("previous offset = %s, want 45s", prev)
	}
	if d := time.Until(c.Now()); d > -19*time.Second || d < -21*time.Second {
		t.Errorf("after a -20s jump Now() is %s from time.Now", d)
	}
	if got := c.TestClockOffsetNow(); got != -20*time.Second {
		t.Errorf("TestClockOffsetNow = %s", got)
	}
}
