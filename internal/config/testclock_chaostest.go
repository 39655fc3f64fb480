//go:build chaostest

package config

import (
	"time"
)

// TestClockAvailable reports whether this build has the test-only clock
// hook (built with the "chaostest" tag).
const TestClockAvailable = true

// parseTestClock sets up the live test clock, starting at the offset in v
// (TestClockOffsetEnv, empty for none).
func (c *Config) parseTestClock(v string) error {
	c.clock = &testClock{}
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return usagef("%s=%q: %v", TestClockOffsetEnv, v, err)
	}
	c.TestClockOffset = d
	c.clock.offset.Store(int64(d))
	return nil
}

// SetTestClockOffset makes the node's clock jump to time.Now shifted by d
// (test-only: the chaos harness's clock nemesis) and returns the previous
// offset. Only a "chaostest" build has it.
func (c *Config) SetTestClockOffset(d time.Duration) time.Duration {
	if c.clock == nil {
		c.clock = &testClock{}
	}
	return time.Duration(c.clock.offset.Swap(int64(d)))
}

// TestClockOffsetNow returns the live test clock offset.
func (c *Config) TestClockOffsetNow() time.Duration {
	if c.clock == nil {
		return 0
	}
	return time.Duration(c.clock.offset.Load())
}
