package webhook

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/services/metrics"
)

// reason classifies a failed attempt, for signal_webhook_retried_total.
type reason uint8

const (
	reason5xx      reason = iota // the receiver answered 5xx
	reason429                    // 429 Too Many Requests
	reason4xx                    // another 4xx
	reason3xx                    // a redirect (not followed) or another non-2xx
	reasonTimeout                // no answer within Timeout
	reasonRefused                // connection refused: nothing listens
	reasonReset                  // the connection was reset or closed before an answer
	reasonDNS                    // the host name did not resolve
	reasonCanceled               // cancelled by the stop
	reasonOther
	numReasons
)

var reasonNames = [numReasons]string{
	reason5xx:      "status_5xx",
	reason429:      "status_429",
	reason4xx:      "status_4xx",
	reason3xx:      "status_other",
	reasonTimeout:  "timeout",
	reasonRefused:  "refused",
	reasonReset:    "reset",
	reasonDNS:      "dns",
	reasonCanceled: "canceled",
	reasonOther:    "other",
}

// stats are the webhook's counters, plain atomics read by the collector and
// by Stats.
type stats struct {
	delivered   atomic.Uint64
	attempts    atomic.Uint64
	failed      [numReasons]atomic.Uint64
	redelivered atomic.Uint64
	outOfOrder  atomic.Uint64
	ackErrors   atomic.Uint64
	pending     atomic.Int64
	inflight    atomic.Int64
	delivery    prometheus.Histogram
	post        prometheus.Histogram
}

func newStats() *stats {
	return &stats{
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "webhook", Name: "delivery_seconds",
			Help: "From the event's store in the stream to the receiver's 2xx (retries and backlog included).",
			// 5 ms to about 5 hours.
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 11),
		}),
		post: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metrics.Namespace, Subsystem: "webhook", Name: "post_seconds",
			Help:    "Duration of one POST attempt, failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}),
	}
}

func (s *stats) failedTotal() uint64 {
	var n uint64
	for i := range s.failed {
		n += s.failed[i].Load()
	}
	return n
}

// Stats is a snapshot of the webhook's counters.
type Stats struct {
	Delivered   uint64            // events answered 2xx and acked
	Attempts    uint64            // POSTs made
	Retried     uint64            // attempts that failed (each is retried, unless stopping)
	RetriedBy   map[string]uint64 // Retried by reason (status_5xx, status_429, status_4xx, status_other, timeout, refused, reset, dns, canceled, other)
	Redelivered uint64            // messages JetStream delivered more than once
	OutOfOrder  uint64            // messages that arrived while a later one of their user was in flight here
	AckErrors   uint64            // acks not confirmed at the first try
	Pending     int64             // messages received and not yet acked
	InFlight    int64             // events being POSTed, retries included
}

// Stats returns the counters now.
func (w *Webhook) Stats() Stats {
	s := w.stats
	st := Stats{
		Delivered:   s.delivered.Load(),
		Attempts:    s.attempts.Load(),
		RetriedBy:   make(map[string]uint64, numReasons),
		Redelivered: s.redelivered.Load(),
		OutOfOrder:  s.outOfOrder.Load(),
		AckErrors:   s.ackErrors.Load(),
		Pending:     s.pending.Load(),
		InFlight:    s.inflight.Load(),
	}
	for i := range s.failed {
		if n := s.failed[i].Load(); n > 0 {
			st.RetriedBy[reasonNames[i]] = n
			st.Retried += n
		}
	}
	return st
}

// Collectors returns the webhook's metrics, for a Prometheus registry.
func (w *Webhook) Collectors() []prometheus.Collector {
	return []prometheus.Collector{&collector{s: w.stats}, w.stats.delivery, w.stats.post}
}

var (
	descDelivered = desc("delivered_total", "Events the receiver answered 2xx, acked.")
	descAttempts  = desc("attempts_total", "POSTs made, retries included.")
	descRetried   = desc("retried_total", "Attempts that failed and are retried, by reason: status_5xx, status_429, status_4xx, status_other (3xx), timeout, refused, reset, dns, canceled (stop), other.", "reason")
	descRedeliv   = desc("redelivered_total", "Messages JetStream delivered more than once (after a restart or an outage longer than the ack wait).")
	descOOO       = desc("out_of_order_total", "Messages that arrived while a later event of their user was in flight here (lost in a NATS disconnect, or given back by a sibling instance); reordering between instances is not seen.")
	descAckErrors = desc("ack_errors_total", "Acks the server did not confirm at once; they are retried.")
	descPending   = desc("pending", "Events received and not yet acked.")
	descInFlight  = desc("in_flight", "Events being POSTed, retries included.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metrics.Namespace, "webhook", name), help, labels, nil)
}

// collector reads the atomics at scrape time.
type collector struct{ s *stats }

var _ prometheus.Collector = (*collector)(nil)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDelivered, descAttempts, descRetried, descRedeliv, descOOO, descAckErrors, descPending, descInFlight} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descDelivered, s.delivered.Load())
	counter(descAttempts, s.attempts.Load())
	for i := range s.failed {
		counter(descRetried, s.failed[i].Load(), reasonNames[i])
	}
	counter(descRedeliv, s.redelivered.Load())
	counter(descOOO, s.outOfOrder.Load())
	counter(descAckErrors, s.ackErrors.Load())
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.pending.Load()))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(s.inflight.Load()))
}
