package httpapi

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LeaderContact of the test backend: always in contact (it is the leader,
// or a follower of one that answers). contactBackend varies it.
func (b *testBackend) LeaderContact() time.Duration { return 0 }

// contactBackend is a testBackend whose time since leader contact is set
// by the test.
type contactBackend struct {
	*testBackend
	contact atomic.Int64 // time.Duration
}

func (b *contactBackend) LeaderContact() time.Duration { return time.Duration(b.contact.Load()) }

// newContactEnv is newEnv over a contactBackend.
func newContactEnv(t *testing.T, mod func(*Config)) (*env, *contactBackend) {
	t.Helper()
	var cfg Config
	e := newEnv(t, func(c *Config) {
		if mod != nil {
			mod(c)
		}
		cfg = *c
	})
	cb := &contactBackend{testBackend: e.b}
	reg := prometheus.NewRegistry()
	cfg.Registry, cfg.Gatherer = reg, reg
	s, err := New(cfg, cb)
	if err != nil {
		t.Fatal(err)
	}
	e.reg = reg
	e.serve(s, cfg.Extra == nil)
	return e, cb
}

// TestStaleReadBound: ?consistency=stale is served while the node heard
// from a leader within MaxStaleness, and 503 unavailable beyond; a
// linearizable read does not look at it (its barrier decides).
func TestStaleReadBound(t *testing.T) {
	e, cb := newContactEnv(t, nil)
	id := e.create(`{"payload":{"v":1}}`)
	reads := []string{"/v1/actions/" + id, "/v1/actions", "/v1/stats"}
	stale := func(path string) resp {
		return e.do(req{method: "GET", path: path + "?consistency=stale"})
	}
	for _, p := range reads {
		expect(t, stale(p), http.StatusOK, "")
	}
	cb.contact.Store(int64(DefaultMaxStaleness))
	expect(t, stale(reads[0]), http.StatusOK, "") // at the bound: still served
	cb.contact.Store(int64(DefaultMaxStaleness + time.Millisecond))
	for _, p := range reads {
		expect(t, stale(p), http.StatusServiceUnavailable, "unavailable")
		expect(t, e.do(req{method: "GET", path: p}), http.StatusOK, "")
	}
	admin := e.do(req{method: "GET", path: "/v1/admin/clients?consistency=stale", noAuth: true,
		hdr: map[string]string{"Authorization": "Bearer " + e.admin}})
	expect(t, admin, http.StatusServiceUnavailable, "unavailable")

	// A configured bound, and no bound.
	e2, cb2 := newContactEnv(t, func(c *Config) { c.MaxStaleness = time.Minute })
	cb2.contact.Store(int64(30 * time.Second))
	expect(t, e2.do(req{method: "GET", path: "/v1/stats?consistency=stale"}), http.StatusOK, "")
	e3, cb3 := newContactEnv(t, func(c *Config) { c.MaxStaleness = -1 })
	cb3.contact.Store(int64(time.Duration(1 << 62)))
	expect(t, e3.do(req{method: "GET", path: "/v1/stats?consistency=stale"}), http.StatusOK, "")
}
