//go:build !chaostest

package config

// TestClockAvailable reports whether this build has the test-only clock
// hook (built with the "chaostest" tag).
const TestClockAvailable = false

// parseTestClock refuses TestClockOffsetEnv: this build has no test clock.
// Refusing (rather than ignoring) it makes a stray test setting loud.
func (c *Config) parseTestClock(v string) error {
	if v != "" {
		return usagef("%s is a test-only hook that this build does not have (build with -tags chaostest); unset it", TestClockOffsetEnv)
	}
	return nil
}
