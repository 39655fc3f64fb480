package httpapi

import (
	"errors"
	"math"
	"net/http"
	"reflect"
	"testing"
)

func sampleBatch() ([]*batchedRequest, []batchedResponse) {
	reqs := []*batchedRequest{
		{Method: "POST", URI: "/v1/actions/act_x/consume", Host: "node1:8080",
			Header: http.Header{"Client-Id": {"cl_1"}, "X-Multi": {"a", "", "c"}}, Body: []byte(`{"pin":"1234"}`), TimeoutMs: 9500},
		{Method: "POST", URI: "/v1/actions", Header: http.Header{}, TimeoutMs: 1},
		{Method: "DELETE", URI: "/v1/actions/act_y", Body: make([]byte, 70000), TimeoutMs: -1},
	}
	out := []batchedResponse{
		{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}, Body: []byte(`{"ok":true}`)},
		{Status: 409, Header: http.Header{}},
		{Status: 503, Header: http.Header{"Retry-After": {"1"}}, Body: []byte{0, 1, 2}},
	}
	return reqs, out
}

// A batch decodes to what was encoded: methods, URIs, multi-valued headers,
// empty and large bodies, timeouts.
func TestBatchCodecRoundTrip(t *testing.T) {
	reqs, out := sampleBatch()
	gotReqs, err := decodeBatchRequests(encodeBatchRequests(reqs), maxBatchCalls)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		want := *r
		if want.Header == nil {
			want.Header = http.Header{}
		}
		if !reflect.DeepEqual(gotReqs[i], want) {
			t.Fatalf("request %d: got %+v, want %+v", i, gotReqs[i], want)
		}
	}
	for _, ms := range []int64{math.MinInt64, -2, 0, 63, 64, math.MaxInt64} {
		got, err := decodeBatchRequests(encodeBatchRequests([]*batchedRequest{{TimeoutMs: ms}}), 1)
		if err != nil || got[0].TimeoutMs != ms {
			t.Fatalf("timeout %d: got %+v, %v", ms, got, err)
		}
	}
	gotOut, err := decodeBatchResponses(encodeBatchResponses(out), len(out))
	if err != nil || !reflect.DeepEqual(gotOut, out) {
		t.Fatalf("responses: got %+v (%v), want %+v", gotOut, err, out)
	}
}

// Every truncation, a wrong version, trailing bytes and counts over the
// limit are errors, never a partial batch.
func TestBatchCodecRejectsMalformed(t *testing.T) {
	reqs, out := sampleBatch()
	enc := encodeBatchRequests(reqs)
	for n := 0; n < len(enc); n += 1 + n/64 {
		if got, err := decodeBatchRequests(enc[:n], maxBatchCalls); !errors.Is(err, errBatchCodec) || got != nil {
			t.Fatalf("request batch cut at %d of %d: %v", n, len(enc), err)
		}
	}
	encOut := encodeBatchResponses(out)
	for n := 0; n < len(encOut); n++ {
		if _, err := decodeBatchResponses(encOut[:n], len(out)); !errors.Is(err, errBatchCodec) {
			t.Fatalf("response batch cut at %d of %d: %v", n, len(encOut), err)
		}
	}
	bad := map[string][]byte{
		"version":  append([]byte{2}, enc[1:]...),
		"trailing": append(append([]byte{}, enc...), 0),
	}
	for name, b := range bad {
		if _, err := decodeBatchRequests(b, maxBatchCalls); !errors.Is(err, errBatchCodec) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := decodeBatchRequests(enc, 2); !errors.Is(err, errBatchCodec) {
		t.Fatalf("3 requests against a limit of 2: %v", err)
	}
	if _, err := decodeBatchResponses(encOut, 2); !errors.Is(err, errBatchCodec) {
		t.Fatalf("3 responses where 2 were sent: %v", err)
	}
	badStatus := encodeBatchResponses([]batchedResponse{{Status: 42}})
	if _, err := decodeBatchResponses(badStatus, 1); !errors.Is(err, errBatchCodec) {
		t.Fatalf("status 42: %v", err)
	}
}

// FuzzDecodeBatchRequests: arbitrary bytes never panic, and whatever
// decodes encodes back to the same bytes' meaning.
func FuzzDecodeBatchRequests(f *testing.F) {
	reqs, _ := sampleBatch()
	f.Add(encodeBatchRequests(reqs))
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeBatchRequests(b, maxBatchCalls)
		if err != nil {
			return
		}
		ptrs := make([]*batchedRequest, len(got))
		for i := range got {
			ptrs[i] = &got[i]
		}
		again, err := decodeBatchRequests(encodeBatchRequests(ptrs), maxBatchCalls)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-encoded batch differs: %v", err)
		}
	})
}
