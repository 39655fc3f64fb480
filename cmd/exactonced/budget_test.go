package main

import (
	"testing"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/config"
)

// TestMappedStateDefaultMatchesFSM: the flag's documented default is the
// budget the state machine uses when none is given.
func TestMappedStateDefaultMatchesFSM(t *testing.T) {
	if got := int64(config.DefaultMappedStateMiB) << 20; got != fsm.DefaultMappedBudget {
		t.Fatalf("--mapped-state-mib default %d bytes, fsm.DefaultMappedBudget %d", got, fsm.DefaultMappedBudget)
	}
}
