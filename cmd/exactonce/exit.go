package main

import (
	"errors"

	"github.com/exactonce/exactonce/client"
)

// Exit statuses, documented in the root command's help and in
// docs/operations.md, so that scripts can tell the cases apart.
const (
	// exitOK: the command did what it was asked.
	exitOK = 0
	// exitFailure: anything else (the answer could not be decoded, stdout
	// could not be written).
	exitFailure = 1
	// exitUsage: bad flags, arguments or input (a --payload that is not a
	// JSON object, an unreadable --csv file); nothing was sent.
	exitUsage = 2
	// exitUnknown: no definite answer. The node could not be reached or
	// the connection broke (timeout included), or it answered 503
	// (unavailable, overloaded, outcome_unknown). A write may or may not
	// have happened: repeat it with the same --idempotency-key.
	exitUnknown = 3
	// exitAPI: the server gave a definite error answer (4xx, 500); its
	// code is on stderr.
	exitAPI = 4
	// exitPartial: a CSV batch was answered but some rows failed; the
	// others were created. The result on stdout says which.
	exitPartial = 5
	// exitDamagedFile: snapshot inspect (or save) found the snapshot file
	// damaged (truncated, a checksum mismatch, not a snapshot) or of a
	// format version this build cannot read (snapshot.go).
	exitDamagedFile = 6
)

// exitCodesHelp is the exit status table of `exactonce --help`.
const exitCodesHelp = `Exit status:
  0  success
  1  other failure (an answer that cannot be decoded, stdout not writable)
  2  usage: bad flags, arguments or input; nothing was sent
  3  no definite answer: connection failed or timed out, or HTTP 503
     (unavailable, overloaded, outcome_unknown); a write may or may not have
     happened, so repeat it with the same --idempotency-key
  4  the server answered with an error (4xx, 500); the code is on stderr
  5  a CSV batch was created in part: some rows failed (see "results")
  6  snapshot inspect or save: the snapshot file is damaged (truncated,
     checksum mismatch) or of an unknown format version`

// exitError carries the exit status of a failed command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// apiFailure classifies the error of an API call by its exit status.
func apiFailure(err error) error {
	if err == nil {
		return nil
	}
	var ae *client.APIError
	switch {
	case client.Temporary(err):
		return &exitError{exitUnknown, err}
	case errors.As(err, &ae):
		return &exitError{exitAPI, err}
	default:
		return &exitError{exitFailure, err}
	}
}

// exitCode is the status for the error a command returned: the one it
// carries, or exitUsage for the errors of cobra (unknown command or flag,
// wrong arguments) and of input checks, which carry none.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitUsage
}
