// Package webhook delivers events to webhook endpoints the way Standard
// Webhooks (https://www.standardwebhooks.com) describes: each event POSTed
// with headers webhook-id (the event id), webhook-timestamp and
// webhook-signature (HMAC-SHA256 of "id.timestamp.body" under the
// endpoint's "whsec_" secret), at least once, in event order per endpoint,
// retried with exponential backoff and full jitter, and the endpoint
// disabled after failing for three days.
//
// The package knows nothing of the state machine. Events come from a
// Source; every attempt and the delivery progress go to a Progress, which
// on the leader becomes a replicated command, so that a new leader resumes
// from the last recorded State. Destinations are checked by a Policy (the
// --webhook-allowed-hosts allow-list and the refusal of non-public
// addresses) on the URL and again on every address dialed. DESIGN.md says
// why it is built so; docs/webhooks.md is the receiver's side.
package webhook
