package cluster

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus collectors.
type metrics struct {
	// forwards counts commands a follower forwarded to the leader, by result.
	forwards *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactonce_forwarded_commands_total",
			Help: "Writes this follower forwarded to the leader over the internal channel, by result (ok, not_leader, retry, outcome_unknown, error).",
		}, []string{"result"}),
	}
}

// register registers every collector with reg.
func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.forwards} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}
	return nil
}
