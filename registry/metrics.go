package registry

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/services/metrics"
)

type registryMetrics struct {
	logins   *prometheus.CounterVec
	logouts  *prometheus.CounterVec
	releases prometheus.Counter
	users    atomic.Int64 // names in the users bucket, as this registry's watch sees them
}

func newMetrics() *registryMetrics {
	return &registryMetrics{
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "logins_total",
			Help: "Login requests served, by result (accepted, resumed, taken, bad_token, error).",
		}, []string{"result"}),
		logouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "logouts_total",
			Help: "Logout requests served, by result (released, not_owner, not_found, error).",
		}, []string{"result"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "lease_releases_total",
			Help: "Names released because their edge's lease lapsed.",
		}),
	}
}

// Collectors returns the registry's metrics, for a Prometheus registry.
func (r *Registry) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		r.metrics.logins, r.metrics.logouts, r.metrics.releases,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: metrics.Namespace, Subsystem: "registry", Name: "users",
			Help: "Names held in the users bucket.",
		}, func() float64 { return float64(r.metrics.users.Load()) }),
	}
}
