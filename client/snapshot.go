package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// snapshotPath is the backup endpoint (admin token).
const snapshotPath = "/v1/admin/snapshot"

// Snapshot starts a backup of the whole state (GET /v1/admin/snapshot,
// admin token) and returns the backup file as it streams, with its length.
// The node answers once it has run a linearizable read barrier, so the
// file holds every write acknowledged before the call; writes go on while
// it streams. Read the body to its end and close it; its format (a
// header, the state, a SHA-256 trailer) is in docs/operations.md,
// "Backups", and `exactonce snapshot save` checks and stores it safely.
//
// Errors before the body are as for any call: an *APIError (503
// unavailable without a quorum, 401 without the admin token) or
// ErrConnection. ctx bounds the whole transfer, so give it room (a
// million actions take a few seconds per GiB). A body cut short ends in an
// error wrapping ErrConnection from Read.
func (c *Client) Snapshot(ctx context.Context) (body io.ReadCloser, size int64, err error) {
	u, err := c.url(snapshotPath, nil)
	if err != nil {
		return nil, 0, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("build GET %s: %w", snapshotPath, err)
	}
	hr.Header.Set("Accept", "application/octet-stream, application/json")
	if c.userAgent != "" {
		hr.Header.Set("User-Agent", c.userAgent)
	}
	if c.adminToken != "" {
		hr.Header.Set("Authorization", "Bearer "+c.adminToken)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w: %w", snapshotPath, ErrConnection, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if rerr != nil {
			return nil, 0, fmt.Errorf("GET %s: read response: %w: %w", snapshotPath, ErrConnection, rerr)
		}
		return nil, 0, newAPIError(resp.StatusCode, resp.Header, b)
	}
	return &connBody{ReadCloser: resp.Body}, resp.ContentLength, nil
}

// connBody marks read errors of a streamed body as ErrConnection.
type connBody struct{ io.ReadCloser }

func (b *connBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("GET %s: read: %w: %w", snapshotPath, ErrConnection, err)
	}
	return n, err
}
