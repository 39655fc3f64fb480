package httpapi

import (
	"context"
	"fmt"
	"golang.org/x/sync/singleflight"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exactonce/exactonce/internal/secure"
	"github.com/exactonce/exactonce/internal/traceparent"
	"github.com/exactonce/exactonce/openapi"
)

// Server is the HTTP API of one node. It implements http.Handler.
type Server struct {
	cfg     Config
	b       Backend
	log     *slog.Logger
	router  *mux.Router
	metrics *metrics
	demo    *addrLimiter
	// clients caches decoded client records for authentication.
	clients clientCache
	// consumes holds back consumes of an action already in flight from
	// this node.
	consumes inflightConsumes
	// leaderSettled shares one leader read among the consumes of one
	// action answered by the leader at once (answerSettledOnLeader).
	leaderSettled singleflight.Group
	// settledAnswers keeps rendered answers to consumes of settled actions.
	settledAnswers settledAnswers
	// actionIDs makes the ids of new actions, in creation order.
	actionIDs secure.ActionIDs
	// inflight counts the requests being served (limit.go).
	inflight inflightRequests
	// demoReveals rate-limits demo reveals per remote address, as demo
	// limits creates.
	demoReveals *addrLimiter
}

// New builds the HTTP API over a backend.
func New(cfg Config, b Backend) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("httpapi: nil backend")
	}
	m, err := newMetrics(c.Registry)
	if err != nil {
		return nil, fmt.Errorf("httpapi: register metrics: %w", err)
	}
	s := &Server{
		cfg:     c,
		b:       b,
		log:     c.Logger,
		metrics: m,
	}
	if c.DemoRatePerMinute > 0 {
		s.demo = newAddrLimiter(c.DemoRatePerMinute)
		s.demoReveals = newAddrLimiter(demoRevealsPerCreate * c.DemoRatePerMinute)
	}
	s.router = s.routes()
	return s, nil
}

// Handler returns the server as an http.Handler.
func (s *Server) Handler() http.Handler { return s }

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

func (s *Server) routes() *mux.Router {
	r := mux.NewRouter()
	// No cleaning of paths: gorilla/mux would answer an unclean path
	// ("//v1/actions", "/v1/x/../stats") with a 301 redirect. As sent, such
	// a path names no route: 404, in JSON like every answer.
	r.SkipClean(true)
	r.Use(s.middleware)
	r.NotFoundHandler = s.middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, CodeNotFound, "", nil)
	}))
	r.MethodNotAllowedHandler = s.middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, CodeMethodNotAllowed, "", nil)
	}))

	// gorilla/mux tries routes in order, one regular expression each, so
	// the busiest routes come first (no two paths here overlap), and the two
	// busiest are matched by a plain string test, named by their template
	// (route matching with regular expressions was a third of the handling
	// of a settled consume). Their regular-expression routes stay below for
	// everything else (a wrong method gets 405 from them).
	r.MatcherFunc(actionPath(http.MethodPost, "/consume")).Name(routeConsume).Handler(s.consumeWrite())
	r.MatcherFunc(actionPath(http.MethodGet, "")).Name(routeAction).Handler(http.HandlerFunc(s.verifyAction))
	r.Handle("/v1/actions/{id}/consume", s.consumeWrite()).Methods(http.MethodPost)
	r.Handle("/v1/actions/{id}", http.HandlerFunc(s.verifyAction)).Methods(http.MethodGet)
	r.Handle("/v1/actions", s.clientWrite(s.createActions)).Methods(http.MethodPost)
	r.Handle("/v1/actions/{id}", s.clientWrite(s.cancelAction)).Methods(http.MethodDelete)
	r.Handle("/v1/actions", http.HandlerFunc(s.listActions)).Methods(http.MethodGet)
	r.Handle("/v1/stats", http.HandlerFunc(s.stats)).Methods(http.MethodGet)

	r.Handle("/healthz", http.HandlerFunc(s.healthz)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", http.HandlerFunc(s.readyz)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.Handle("/v1/openapi.json", openapiHandler()).Methods(http.MethodGet)

	r.Handle("/v1/demo", s.demoLimit(s.plainWrite(s.demoCreate))).Methods(http.MethodPost)
	r.Handle("/v1/demo/{id}/reveal", s.demoRevealRoute()).Methods(http.MethodGet)

	r.Handle("/v1/admin/clients", RequireAdmin(s.cfg.AdminTokenHash, s.plainWrite(s.adminCreateClient))).Methods(http.MethodPost)
	r.Handle("/v1/admin/clients", RequireAdmin(s.cfg.AdminTokenHash, http.HandlerFunc(s.adminListClients))).Methods(http.MethodGet)
	r.Handle("/v1/admin/clients/{id}", RequireAdmin(s.cfg.AdminTokenHash, s.plainWrite(s.adminRevokeClient))).Methods(http.MethodDelete)

	if s.cfg.Extra != nil {
		s.cfg.Extra(r)
	}
	return r
}

// Routes lists the routes the server serves as "METHOD /path/{template}",
// sorted and each once, including those mounted through Config.Extra: what
// the OpenAPI document must describe (the tests compare the two).
func (s *Server) Routes() ([]string, error) {
	seen := map[string]bool{}
	err := s.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return nil // the actionPath matchers, served again by their template routes below
		}
		methods, err := route.GetMethods()
		if err != nil {
			return fmt.Errorf("route %s has no methods: %w", tpl, err)
		}
		for _, m := range methods {
			seen[m+" "+tpl] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out, nil
}

// Templates of the routes matched by actionPath.
const (
	routeConsume = "/v1/actions/{id}/consume"
	routeAction  = "/v1/actions/{id}"
)

// actionPath matches method on "/v1/actions/{id}" + suffix, where {id} is
// one non-empty path segment (as the template's [^/]+), and sets the id var.
func actionPath(method, suffix string) mux.MatcherFunc {
	return func(r *http.Request, m *mux.RouteMatch) bool {
		if r.Method != method {
			return false
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/v1/actions/")
		if !ok {
			return false
		}
		id, ok := strings.CutSuffix(rest, suffix)
		if !ok || id == "" || strings.IndexByte(id, '/') >= 0 {
			return false
		}
		if m.Vars == nil {
			m.Vars = make(map[string]string, 1)
		}
		m.Vars["id"] = id
		return true
	}
}

type ctxKey int

// requestKey holds a *requestInfo in a request's context.
const requestKey ctxKey = 0

// requestInfo is what the middleware puts in a request's context: one
// value, and no per-request logger, since most requests log one line.
type requestInfo struct {
	log *slog.Logger // the server's logger, without the request id
	id  string
	// traceparent is the caller's valid W3C traceparent, "" when none.
	traceparent string
	// clientID is the client authClient authenticated ("" before).
	clientID string
}

// LoggerFrom returns the request's logger (carrying its request_id and,
// when the caller sent one, its traceparent), or slog.Default() outside a
// request.
func LoggerFrom(ctx context.Context) *slog.Logger {
	if ri, ok := ctx.Value(requestKey).(*requestInfo); ok {
		if ri.traceparent != "" {
			return ri.log.With("request_id", ri.id, "traceparent", ri.traceparent)
		}
		return ri.log.With("request_id", ri.id)
	}
	return slog.Default()
}

// RequestIDFrom returns the request's id, "" outside a request.
func RequestIDFrom(ctx context.Context) string {
	if ri, ok := ctx.Value(requestKey).(*requestInfo); ok {
		return ri.id
	}
	return ""
}

// validRequestID accepts a caller's X-Request-Id: 1 to 128 characters of
// letters, digits and "-_.:". Anything else is replaced by a fresh id so
// that logs cannot be polluted.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes a flush through to the underlying writer when it can.
func (s *statusRecorder) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// middleware gives every request an id, a logger, a deadline, metrics and
// an access log line, and takes the caller's W3C traceparent when it is
// valid (an invalid one is ignored: tracing is the caller's business, not
// a reason to refuse a request). The traceparent rides in the context,
// so a write forwarded to the leader carries it there (cluster), and it
// is logged with the request; it refuses requests over the header limit or the
// concurrency cap, and makes every answer JSON (jsonGuard) with
// X-Content-Type-Options: nosniff, so that no browser runs a body as
// anything but data.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if !validRequestID(rid) {
			rid = secure.NewRequestID()
			r.Header.Set("X-Request-Id", rid)
		}
		w.Header().Set("X-Request-Id", rid)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		route := "unmatched"
		if cr := mux.CurrentRoute(r); cr != nil {
			if name := cr.GetName(); name != "" {
				route = name // actionPath routes, named by their template
			} else if t, err := cr.GetPathTemplate(); err == nil {
				route = t
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		ri := &requestInfo{log: s.log, id: rid}
		if tp, ok := traceparent.Parse(r.Header.Get(traceparent.Header)); ok {
			ri.traceparent = tp
			ctx = traceparent.NewContext(ctx, tp)
		}
		ctx = context.WithValue(ctx, requestKey, ri)
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in handler", "request_id", rid, "route", route, "panic", fmt.Sprint(p))
				if rec.status == 0 {
					WriteError(rec, "internal", "", nil)
				}
			}
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			d := time.Since(start)
			code, method := strconv.Itoa(rec.status), methodLabel(r.Method)
			s.metrics.requests.WithLabelValues(route, method, code).Inc()
			s.metrics.duration.WithLabelValues(route, method, code).Observe(d.Seconds())
			// A failed request always logs at Info. With Config.AccessLog,
			// so does every client request except machine-polled routes;
			// the rest log at Debug.
			level := slog.LevelDebug
			if rec.status >= 500 || s.cfg.AccessLog && !quietRoute(route) {
				level = slog.LevelInfo
			}
			if s.log.Enabled(ctx, level) {
				attrs := []any{"request_id", rid, "method", r.Method, "route", route, "status", rec.status,
					"duration_ms", d.Milliseconds(), "remote", remoteHost(r)}
				if ri.traceparent != "" {
					attrs = append(attrs, "traceparent", ri.traceparent)
				}
				s.log.Log(ctx, level, "http request", attrs...)
			}
		}()
		if s.headersTooLarge(rec, r) {
			return
		}
		counted, ok := s.admit(rec, route)
		if !ok {
			return
		}
		if counted {
			defer s.inflight.leave()
		}
		next.ServeHTTP(&jsonGuard{ResponseWriter: rec}, r.WithContext(ctx))
	})
}

// methodLabel is the method label of a request's metrics: the standard
// methods by name, anything else "other". net/http accepts any token as a
// method, and one series per made-up method would let a client grow the
// node's memory and every scrape without bound.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	default:
		return "other"
	}
}

// quietRoute reports routes polled by machines (probes, scrapes, node to
// node calls) whose access log lines are Debug unless they fail.
func quietRoute(route string) bool {
	return route == "/healthz" || route == "/readyz" || route == "/metrics" || strings.HasPrefix(route, "/internal/") // the chaostest clock
}

// openapiHandler serves the OpenAPI document of this API. It needs no
// credentials: the document is the published description of the API, the
// same for every node, and holds nothing of the node serving it (no
// addresses, no settings), so it tells a caller nothing docs/api.md does
// not; tools (code generators, API explorers) fetch it without secrets.
func openapiHandler() http.Handler {
	doc := openapi.Document()
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSONBytes(w, http.StatusOK, doc)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.b.Ready() {
		WriteError(w, CodeUnavailable, "this node has no leader or has not caught up", nil)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// remoteHost is the IP of the TCP peer (no proxy headers are trusted).
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// requestBuckets are the request latency histogram's upper bounds: from
// 100 µs (a settled consume or a cached read answers in well under a
// millisecond) to 10 s (the default request deadline).
var requestBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// metrics are the Prometheus collectors of one Server (docs/metrics.md).
// The write counters count on the node that answered the request, whether
// it decided the write itself (leader) or forwarded it (follower).
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	consumes *prometheus.CounterVec
	creates  prometheus.Counter
	cancels  prometheus.Counter
	settled  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactonce_http_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exactonce_http_request_duration_seconds",
			Help:    "HTTP request latency by route template, method and status code.",
			Buckets: requestBuckets,
		}, []string{"route", "method", "code"}),
		consumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactonce_consumes_total",
			Help: "Consume attempts answered by this node, by outcome (consumed or the error code); replays are not counted.",
		}, []string{"outcome"}),
		creates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_actions_created_total",
			Help: "Actions created through this node (API and demo): answered here, decided here or on the leader (first executions, not replays).",
		}),
		cancels: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_actions_canceled_total",
			Help: "Actions canceled through this node (first cancellations, not repeats or replays).",
		}),
		settled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_consumes_settled_locally_total",
			Help: "Consumes of an already consumed or canceled action answered from this node's state, with no log entry.",
		}),
	}
	m.consumes.WithLabelValues("consumed") // exported at zero before the first consume
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.consumes, m.creates, m.cancels, m.settled} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
