package buildinfo

import "github.com/prometheus/client_golang/prometheus"

// Collector is exactonce_build_info: always 1, with the build as labels
// (version, goversion, revision), the Prometheus convention for joining a
// version to other series (`* on(instance) group_left(version)
// exactonce_build_info`).
func Collector(info Info) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "exactonce_build_info",
		Help: "Always 1; the labels tell the build of this node: version, goversion and revision.",
		ConstLabels: prometheus.Labels{
			"version":   info.Version,
			"goversion": info.GoVersion,
			"revision":  info.Revision,
		},
	}, func() float64 { return 1 })
}
