package edge

import (
	"sync/atomic"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/protocol"
)

// reason classifies what went wrong with a client, for the error metric.
type reason uint8

const (
	reasonInvalidJSON reason = iota
	reasonBadFrame
	reasonBinary
	reasonNotLoggedIn
	reasonAlreadyLoggedIn
	reasonBadTarget
	reasonMissingPayload
	reasonNotOnline
	reasonBusDown
	reasonLoginFailed
	reasonProtocol
	reasonInvalidUTF8
	reasonTooBig
	reasonSlowClient
	reasonDeadSocket
	reasonOrigin
	reasonAuth
	reasonConnLimit
	reasonIPLimit
	reasonRateLimited
	reasonAbuse
	reasonLoginAttempts
	reasonCandidateLimit
	reasonNameMismatch
	numReasons
)

var reasonNames = [numReasons]string{
	reasonInvalidJSON:     "invalid_json",
	reasonBadFrame:        "bad_frame",
	reasonBinary:          "binary_frame",
	reasonNotLoggedIn:     "not_logged_in",
	reasonAlreadyLoggedIn: "already_logged_in",
	reasonBadTarget:       "bad_target",
	reasonMissingPayload:  "missing_payload",
	reasonNotOnline:       "not_online",
	reasonBusDown:         "nats_down",
	reasonLoginFailed:     "login_failed",
	reasonProtocol:        "ws_protocol",
	reasonInvalidUTF8:     "ws_invalid_utf8",
	reasonTooBig:          "ws_too_big",
	reasonSlowClient:      "slow_client",
	reasonDeadSocket:      "dead_socket",
	reasonOrigin:          "origin_refused",
	reasonAuth:            "auth_failed",
	reasonConnLimit:       "edge_full",
	reasonIPLimit:         "ip_limit",
	reasonRateLimited:     "rate_limited",
	reasonAbuse:           "abuse_closed",
	reasonLoginAttempts:   "login_attempts",
	reasonCandidateLimit:  "candidate_limit",
	reasonNameMismatch:    "name_not_in_token",
}

// closeReasonOf maps the close frames of fail to a reason.
func closeReasonOf(cr closeReason) reason {
	switch cr.code {
	case ws.StatusMessageTooBig:
		return reasonTooBig
	case ws.StatusInvalidFramePayloadData:
		return reasonInvalidUTF8
	case ws.StatusPolicyViolation:
		return reasonAbuse
	default:
		return reasonProtocol
	}
}

// login results, for the logins metric.
type loginResult uint8

const (
	loginOK loginResult = iota
	loginResumed
	loginTaken
	loginInvalid
	loginError
	numLoginResults
)

var loginNames = [numLoginResults]string{"accepted", "resumed", "taken", "invalid", "error"}

// relayTypes are the protocol types the edge relays, for the relayed metric.
var relayTypes = [...]protocol.Type{protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave}

// stats are the edge's counters: plain atomics on the hot path, read by the
// Prometheus collector and by Stats.
type stats struct {
	connections atomic.Int64 // open sockets
	users       atomic.Int64 // logged-in sockets
	relayed     [protocol.TypeLeave + 1]atomic.Uint64
	errors      [numReasons]atomic.Uint64
	logins      [numLoginResults]atomic.Uint64
	latency     prometheus.Histogram // publish at the sender's edge to hand-off to the socket here
}

func newStats(id string) *stats {
	return &stats{latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace:   metrics.Namespace,
		Subsystem:   "edge",
		Name:        "relay_latency_seconds",
		Help:        "Time from a frame's publish at the sender's edge to its hand-off to the target's socket writer here.",
		ConstLabels: prometheus.Labels{"edge": id},
		Buckets:     prometheus.ExponentialBuckets(25e-6, 2, 16), // 25µs .. ~0.8s
	})}
}

// Collector returns the edge's metrics, for a Prometheus registry.
func (e *Edge) Collector() prometheus.Collector { return (*collector)(e) }

type collector Edge

var (
	descConnections = prometheus.NewDesc("signal_edge_connections", "Open WebSocket connections.", []string{"edge"}, nil)
	descUsers       = prometheus.NewDesc("signal_edge_users", "Logged-in WebSocket connections.", []string{"edge"}, nil)
	descRelayed     = prometheus.NewDesc("signal_edge_messages_relayed_total", "Client messages published to their target, by type.", []string{"edge", "type"}, nil)
	descErrors      = prometheus.NewDesc("signal_edge_errors_total", "Error frames sent and connections closed for cause, by reason.", []string{"edge", "reason"}, nil)
	descLogins      = prometheus.NewDesc("signal_edge_logins_total", "Login attempts, by result.", []string{"edge", "result"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnections
	ch <- descUsers
	ch <- descRelayed
	ch <- descErrors
	ch <- descLogins
	c.stats.latency.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	id := c.cfg.ID
	s := c.stats
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(s.connections.Load()), id)
	ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(s.users.Load()), id)
	for _, t := range relayTypes {
		ch <- prometheus.MustNewConstMetric(descRelayed, prometheus.CounterValue, float64(s.relayed[t].Load()), id, t.String())
	}
	for r := range numReasons {
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.errors[r].Load()), id, reasonNames[r])
	}
	for r := range numLoginResults {
		ch <- prometheus.MustNewConstMetric(descLogins, prometheus.CounterValue, float64(s.logins[r].Load()), id, loginNames[r])
	}
	s.latency.Collect(ch)
}
