package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestScheduleIsReplayedBySeed(t *testing.T) {
	const seed = 42
	t.Logf("seed %d", seed)
	for _, name := range ScenarioNames() {
		kinds, _ := ScenarioFaults(name)
		s := ScenarioSeed(seed, name)
		a := NewSchedule(s, kinds, time.Minute)
		b := NewSchedule(s, kinds, time.Minute)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: the same seed gave different schedules", name)
		}
		if len(kinds) > 0 && len(a) == 0 {
			t.Fatalf("%s: a one-minute scenario has no fault", name)
		}
		var prevEnd time.Duration
		for _, f := range a {
			if f.At < prevEnd {
				t.Errorf("%s: fault %s starts before the previous one ends", name, f)
			}
			if end := f.At + f.Hold; end > time.Minute-8*time.Second {
				t.Errorf("%s: fault %s runs into the cool-down", name, f)
			}
			prevEnd = f.At + f.Hold
		}
	}
	mixed, _ := ScenarioFaults("mixed")
	if reflect.DeepEqual(NewSchedule(ScenarioSeed(1, "mixed"), mixed, time.Minute),
		NewSchedule(ScenarioSeed(2, "mixed"), mixed, time.Minute)) {
		t.Error("seeds 1 and 2 gave the same mixed schedule")
	}
}

// TestUpgradeSchedule: the upgrade scenario replaces each of the three
// nodes once, early enough that the workload sees the whole cluster on the
// new build.
func TestUpgradeSchedule(t *testing.T) {
	kinds, ok := ScenarioFaults("upgrade")
	if !ok {
		t.Fatal("no upgrade scenario")
	}
	for seed := uint64(1); seed <= 20; seed++ {
		s := NewSchedule(ScenarioSeed(seed, "upgrade"), kinds, time.Minute)
		if len(s) != upgradeSteps {
			t.Fatalf("seed %d: %d faults, want %d: %v", seed, len(s), upgradeSteps, s)
		}
		for _, f := range s {
			if f.Kind != UpgradeNode || f.At > 30*time.Second {
				t.Fatalf("seed %d: fault %s: want upgrade-node faults in the first half", seed, f)
			}
		}
	}
}

func TestOutcomeOfAttempts(t *testing.T) {
	cases := []struct {
		name     string
		attempts []Attempt
		want     Outcome
	}{
		{"definite", []Attempt{{Status: 200}}, Outcome{Status: 200}},
		{"transport error then replay", []Attempt{{Err: "timeout"}, {Status: 200}}, Outcome{Status: 200}},
		{"only unavailable: nothing proposed", []Attempt{{Status: 503, Code: "unavailable"}, {Status: 503, Code: "unavailable"}}, Outcome{Status: 503, Code: "unavailable"}},
		{"outcome_unknown then unavailable", []Attempt{{Status: 503, Code: "outcome_unknown"}, {Status: 503, Code: "unavailable"}}, Outcome{Unknown: true}},
		{"timeouts only", []Attempt{{Err: "timeout"}}, Outcome{Unknown: true}},
	}
	for _, c := range cases {
		op := &Op{Kind: OpConsume, Attempts: c.attempts}
		if got := outcomeOf(op); got != c.want {
			t.Errorf("%s: outcome %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestClockScenarioJumpsBothWays(t *testing.T) {
	kinds, _ := ScenarioFaults("clock")
	var jumps []time.Duration
	for seed := uint64(1); seed <= 20; seed++ {
		for _, f := range NewSchedule(ScenarioSeed(seed, "clock"), kinds, 2*time.Minute) {
			if f.Kind == ClockJump {
				if len(f.Jumps) < 3 {
					t.Errorf("seed %d: clock jump %s has %d jumps, want 3 or more", seed, f, len(f.Jumps))
				}
				jumps = append(jumps, f.Jumps...)
			}
		}
	}
	var fwd, back bool
	for _, d := range jumps {
		if a := d.Abs(); a < 5*time.Second || a > 60*time.Second {
			t.Errorf("jump %v outside ±5..60s", d)
		}
		fwd, back = fwd || d > 0, back || d < 0
	}
	if !fwd || !back {
		t.Errorf("clock jumps over 20 seeds: forward %v, backward %v; want both", fwd, back)
	}
}

// TestNodeEnv: a scenario without snapshot faults keeps a long log, one
// with them keeps the harness's short one, and the user's -node-env wins.
func TestNodeEnv(t *testing.T) {
	o := Options{DefaultNodeEnv: []string{"A=1", "EXACTONCE_TEST_TRAILING_LOGS=128"}, NodeEnv: []string{"B=2"}}
	last := func(env []string, key string) string {
		v := ""
		for _, kv := range env {
			if k, val, ok := strings.Cut(kv, "="); ok && k == key {
				v = val
			}
		}
		return v
	}
	if got := last(nodeEnv(o, "kill"), "EXACTONCE_TEST_TRAILING_LOGS"); got != "10000000" {
		t.Errorf("kill keeps trailing logs %q, want the full log", got)
	}
	if got := last(nodeEnv(o, "snapshot"), "EXACTONCE_TEST_TRAILING_LOGS"); got != "128" {
		t.Errorf("snapshot keeps trailing logs %q, want 128", got)
	}
	if got := last(nodeEnv(o, "power-loss"), "EXACTONCE_TEST_TRAILING_LOGS"); got != "128" {
		t.Errorf("power-loss keeps trailing logs %q, want 128", got)
	}
	o.NodeEnv = append(o.NodeEnv, "EXACTONCE_TEST_TRAILING_LOGS=7")
	if got := last(nodeEnv(o, "kill"), "EXACTONCE_TEST_TRAILING_LOGS"); got != "7" {
		t.Errorf("user -node-env lost: %q", got)
	}
	if got := last(nodeEnv(o, "pause"), "B"); got != "2" {
		t.Errorf("user env missing: %q", got)
	}
}
