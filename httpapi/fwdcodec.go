package httpapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
)

// The binary encoding of forwarded batches.
//
// Why: batches were JSON, with every body in base64 and every header map
// through reflection; encoding and decoding them was 9 % of the leader's
// CPU under consumes at 64 clients, besides the followers' share. A batch
// is a version byte and a count, then each request (or response) as
// length-prefixed fields:
//
//	request:  method, uri, host, header, body, timeoutMs (signed varint)
//	response: status (uvarint), header, body
//	header:   count of names; per name: name, count of values, values
//
// Strings and bodies are a uvarint length and the bytes. A leader still
// reads a JSON batch (a follower of an earlier version during a rolling
// upgrade) and answers in the encoding it was asked in.
const (
	// contentTypeBatch marks a binary batch request or response.
	contentTypeBatch = "application/x-exactonce-forward-batch"
	// batchCodecVersion is the first byte of a binary batch.
	batchCodecVersion = 1
)

// errBatchCodec is returned (wrapped) for a binary batch that does not
// decode.
var errBatchCodec = errors.New("malformed binary forward batch")

func appendBatchString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func appendBatchBytes(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

func appendBatchHeader(dst []byte, h http.Header) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(h)))
	for k, vs := range h {
		dst = appendBatchString(dst, k)
		dst = binary.AppendUvarint(dst, uint64(len(vs)))
		for _, v := range vs {
			dst = appendBatchString(dst, v)
		}
	}
	return dst
}

// encodedSizeHint is a capacity for a batch of n entries whose bodies
// total bodies bytes: headers and other fields rarely take more than
// 64 bytes an entry on top.
func encodedSizeHint(n, bodies int) int { return 16 + bodies + 64*n }

// encodeBatchRequests encodes a batch of requests.
func encodeBatchRequests(reqs []*batchedRequest) []byte {
	bodies := 0
	for _, r := range reqs {
		bodies += len(r.Body) + len(r.URI)
	}
	dst := make([]byte, 0, encodedSizeHint(len(reqs), bodies))
	dst = append(dst, batchCodecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(reqs)))
	for _, r := range reqs {
		dst = appendBatchString(dst, r.Method)
		dst = appendBatchString(dst, r.URI)
		dst = appendBatchString(dst, r.Host)
		dst = appendBatchHeader(dst, r.Header)
		dst = appendBatchBytes(dst, r.Body)
		dst = binary.AppendVarint(dst, r.TimeoutMs)
	}
	return dst
}

// encodeBatchResponses encodes the answers to a batch.
func encodeBatchResponses(out []batchedResponse) []byte {
	bodies := 0
	for i := range out {
		bodies += len(out[i].Body)
	}
	dst := make([]byte, 0, encodedSizeHint(len(out), bodies))
	dst = append(dst, batchCodecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(out)))
	for i := range out {
		dst = binary.AppendUvarint(dst, uint64(out[i].Status))
		dst = appendBatchHeader(dst, out[i].Header)
		dst = appendBatchBytes(dst, out[i].Body)
	}
	return dst
}

// batchReader decodes a binary batch; the first error sticks, and every
// count is bounded by the bytes left (each element takes at least one), so
// a garbled batch cannot make it allocate much.
type batchReader struct {
	b   []byte
	err error
}

func (r *batchReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBatchCodec, what)
	}
}

func (r *batchReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// varint reads binary.AppendVarint's encoding: a zig-zag uvarint.
func (r *batchReader) varint(what string) int64 {
	u := r.uvarint(what)
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// count reads an element count of at most limit.
func (r *batchReader) count(what string, limit int) int {
	n := r.uvarint(what)
	if r.err == nil && (n > uint64(limit) || n > uint64(len(r.b))) {
		r.fail(what + " count")
		return 0
	}
	return int(n)
}

// bytes returns the next length-prefixed field, sharing r's buffer; nil
// when empty.
func (r *batchReader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	if n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *batchReader) str(what string) string { return string(r.bytes(what)) }

func (r *batchReader) header() http.Header {
	n := r.count("header", len(r.b))
	h := make(http.Header, n)
	for range n {
		k := r.str("header name")
		vs := make([]string, r.count("header values", len(r.b)))
		for i := range vs {
			vs[i] = r.str("header value")
		}
		if r.err != nil {
			return nil
		}
		h[k] = vs
	}
	return h
}

func (r *batchReader) start(limit int) int {
	if len(r.b) == 0 || r.b[0] != batchCodecVersion {
		r.fail("unknown version")
		return 0
	}
	r.b = r.b[1:]
	return r.count("batch", limit)
}

func (r *batchReader) finish() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	return r.err
}

// decodeBatchRequests decodes a binary batch of at most limit requests.
// Bodies share b.
func decodeBatchRequests(b []byte, limit int) ([]batchedRequest, error) {
	r := &batchReader{b: b}
	reqs := make([]batchedRequest, r.start(limit))
	for i := range reqs {
		q := &reqs[i]
		q.Method = r.str("method")
		q.URI = r.str("uri")
		q.Host = r.str("host")
		q.Header = r.header()
		q.Body = r.bytes("body")
		q.TimeoutMs = r.varint("timeout")
	}
	if err := r.finish(); err != nil {
		return nil, err
	}
	return reqs, nil
}

// decodeBatchResponses decodes a binary batch answer of at most limit
// responses. Bodies share b.
func decodeBatchResponses(b []byte, limit int) ([]batchedResponse, error) {
	r := &batchReader{b: b}
	out := make([]batchedResponse, r.start(limit))
	for i := range out {
		status := r.uvarint("status")
		if r.err == nil && (status < 100 || status > 999) {
			r.fail("status")
		}
		out[i].Status = int(status)
		out[i].Header = r.header()
		out[i].Body = r.bytes("body")
	}
	if err := r.finish(); err != nil {
		return nil, err
	}
	return out, nil
}
