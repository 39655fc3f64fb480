package webhook

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemorySource is an in-memory Source: one ordered event log and, per
// webhook, the event types it subscribed to. For tests, and as the model
// of what the replicated source must do.
type MemorySource struct {
	mu     sync.Mutex
	events []Event
	types  map[string][]string
}

// NewMemorySource returns an empty MemorySource.
func NewMemorySource() *MemorySource {
	return &MemorySource{types: map[string][]string{}}
}

// Append adds events at the end of the log.
func (s *MemorySource) Append(evs ...Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, evs...)
}

// Subscribe limits webhookID to the given event types; with none, it gets
// every event.
func (s *MemorySource) Subscribe(webhookID string, types ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[webhookID] = types
}

// EventsAfter implements Source.
func (s *MemorySource) EventsAfter(_ context.Context, webhookID, cursor string, limit int) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := 0
	if cursor != "" {
		i := slices.IndexFunc(s.events, func(e Event) bool { return e.ID == cursor })
		if i < 0 {
			return nil, fmt.Errorf("memory source: cursor %q not in the log", cursor)
		}
		start = i + 1
	}
	types := s.types[webhookID]
	var out []Event
	for _, ev := range s.events[start:] {
		if len(out) == limit {
			break
		}
		if len(types) == 0 || slices.Contains(types, ev.Type) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// RecordedAttempt is an attempt as a MemoryProgress stored it.
type RecordedAttempt struct {
	// WebhookID is the webhook attempted.
	WebhookID string
	// Attempt is the attempt.
	Attempt Attempt
	// State is the webhook's state after it.
	State State
}

// MemoryProgress is an in-memory Progress: the last State per webhook and
// every attempt in order. Fail, when set, makes Record fail (to model a
// leader that lost its leadership).
type MemoryProgress struct {
	mu       sync.Mutex
	states   map[string]State
	attempts []RecordedAttempt
	// Fail, when set, is called by Record first; a non-nil error is
	// returned and nothing is stored.
	Fail func(webhookID string, a Attempt) error
}

// NewMemoryProgress returns an empty MemoryProgress.
func NewMemoryProgress() *MemoryProgress {
	return &MemoryProgress{states: map[string]State{}}
}

// Record implements Progress.
func (p *MemoryProgress) Record(_ context.Context, webhookID string, a Attempt, next State) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Fail != nil {
		if err := p.Fail(webhookID, a); err != nil {
			return err
		}
	}
	p.states[webhookID] = next
	p.attempts = append(p.attempts, RecordedAttempt{WebhookID: webhookID, Attempt: a, State: next})
	return nil
}

// State returns the last recorded State of webhookID.
func (p *MemoryProgress) State(webhookID string) State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.states[webhookID]
}

// Attempts returns the recorded attempts of webhookID, oldest first.
func (p *MemoryProgress) Attempts(webhookID string) []Attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Attempt
	for _, r := range p.attempts {
		if r.WebhookID == webhookID {
			out = append(out, r.Attempt)
		}
	}
	return out
}
