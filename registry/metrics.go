package registry

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/services/metrics"
)

type registryMetrics struct {
	logins      *prometheus.CounterVec
	logouts     *prometheus.CounterVec
	joins       *prometheus.CounterVec
	releases    *prometheus.CounterVec
	events      *prometheus.CounterVec
	disconnects prometheus.Counter
	users       atomic.Int64 // names in the users bucket, as this registry's view sees them
}

func newMetrics() *registryMetrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: name, Help: help,
		}, labels)
	}
	return &registryMetrics{
		logins:   counter("logins_total", "Login requests served, by result (accepted, resumed, taken, bad_token, error).", "result"),
		logouts:  counter("logouts_total", "Logout requests served, by result (released, not_owner, not_found, error).", "result"),
		joins:    counter("joins_total", "Join requests served, by result (joined, full, refused, error).", "result"),
		releases: counter("releases_total", "Names the registry released itself, by reason (edge_lost, kicked).", "reason"),
		events:   counter("events_total", "Lifecycle events, by result (sent, failed, dropped).", "result"),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "edge_disconnects_total",
			Help: "NATS disconnect events of edges that held names (each is confirmed before anything is released).",
		}),
	}
}

// Collectors returns the registry's metrics, for a Prometheus registry.
func (r *Registry) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		r.metrics.logins, r.metrics.logouts, r.metrics.joins, r.metrics.releases, r.metrics.events, r.metrics.disconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "users",
			Help: "Names held in the users bucket.",
		}, func() float64 { return float64(r.metrics.users.Load()) }),
	}
}
