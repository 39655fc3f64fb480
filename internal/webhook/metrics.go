package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The engine's metrics (docs/webhooks.md lists them). Each Engine has its
// own collectors, which the caller registers (Engine.Collectors): nothing
// here is global.

// latencyBuckets span a delivery, event to 2xx: 10 ms (a receiver beside
// the leader) to about 3 days (an endpoint that came back just before it
// would have been disabled).
var latencyBuckets = prometheus.ExponentialBuckets(0.01, 4, 14)

// metrics are an engine's Prometheus collectors.
type metrics struct {
	// attempts counts attempts by result.
	attempts *prometheus.CounterVec
	// attemptDuration times attempts, by result.
	attemptDuration *prometheus.HistogramVec
	// latency times events from their creation to their 2xx.
	latency prometheus.Histogram
	// disabled counts endpoints this engine disabled.
	disabled prometheus.Counter
	// backlog reads the workers on each scrape.
	backlog *backlogCollector
}

func newMetrics(e *Engine) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactonce_webhook_attempts_total",
			Help: "Webhook delivery attempts, by result (delivered, http_error, timeout, network, refused).",
		}, []string{"result"}),
		attemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "exactonce_webhook_attempt_duration_seconds",
			Help:    "Time of one webhook delivery attempt, request to the end of the answer, by result.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13),
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "exactonce_webhook_delivery_latency_seconds",
			Help:    "Time from an event's creation to its delivery (2xx) to a webhook, retries included.",
			Buckets: latencyBuckets,
		}),
		disabled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactonce_webhook_endpoints_disabled_total",
			Help: "Webhook endpoints disabled by this node after failing for the whole disable window or answering 410.",
		}),
		backlog: &backlogCollector{e: e},
	}
	for _, r := range results {
		m.attempts.WithLabelValues(string(r))
	}
	return m
}

// attempt counts one attempt of ev.
func (m *metrics) attempt(a Attempt, ev Event) {
	m.attempts.WithLabelValues(string(a.Result)).Inc()
	m.attemptDuration.WithLabelValues(string(a.Result)).Observe(a.Duration.Seconds())
	if a.Result == ResultDelivered && !ev.CreatedAt.IsZero() {
		m.latency.Observe(max(a.Time.Add(a.Duration).Sub(ev.CreatedAt).Seconds(), 0))
	}
}

// Collectors returns the engine's collectors for the caller to register.
func (e *Engine) Collectors() []prometheus.Collector {
	m := e.metrics
	return []prometheus.Collector{m.attempts, m.attemptDuration, m.latency, m.disabled, m.backlog}
}

// Register registers the engine's collectors with reg.
func (e *Engine) Register(reg prometheus.Registerer) error {
	for _, c := range e.Collectors() {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	return nil
}

// Descriptions of the gauges backlogCollector reads on each scrape.
var (
	descBacklog = prometheus.NewDesc("exactonce_webhook_backlog_events",
		"Events read for delivery and not yet delivered, summed over the webhooks this node delivers to (each webhook reads ahead at most its read-ahead, 100 by default).", nil, nil)
	descOldest = prometheus.NewDesc("exactonce_webhook_oldest_undelivered_seconds",
		"Age of the oldest event read for delivery and not yet delivered, over every webhook; 0 when every webhook is caught up.", nil, nil)
	descEndpoints = prometheus.NewDesc("exactonce_webhook_endpoints",
		"Webhook endpoints known to this node's delivery engine, by status (active, failing, disabled); deliveries run on the leader only.", []string{"status"}, nil)
)

// backlogCollector reads the workers' queues on each scrape.
type backlogCollector struct{ e *Engine }

// Describe implements prometheus.Collector.
func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBacklog
	ch <- descOldest
	ch <- descEndpoints
}

// Collect implements prometheus.Collector.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	now := e.cfg.Clock.Now()
	e.mu.Lock()
	workers := make([]*worker, 0, len(e.workers))
	for _, w := range e.workers {
		workers = append(workers, w)
	}
	disabled := 0
	for _, ep := range e.endpoints {
		if ep.State.Disabled {
			disabled++
		}
	}
	e.mu.Unlock()
	total, failing := 0, 0
	var oldest float64
	for _, w := range workers {
		n, first, isFailing := w.backlog()
		total += n
		if n > 0 && !first.IsZero() {
			oldest = max(oldest, now.Sub(first).Seconds())
		}
		if isFailing {
			failing++
		}
	}
	ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, oldest)
	ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(len(workers)-failing), "active")
	ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(failing), "failing")
	ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(disabled), "disabled")
}
