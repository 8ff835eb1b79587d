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
	reasonLostInTransit
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
	reasonBadLogin
	reasonBadRoom
	reasonRoomLimit
	reasonRoomFull
	reasonWatchLimit
	reasonKicked
	reasonDispatchFull
	reasonRoomBusy
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
	reasonLostInTransit:   "lost_in_transit",
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
	reasonBadLogin:        "bad_login",
	reasonBadRoom:         "bad_room",
	reasonRoomLimit:       "room_limit",
	reasonRoomFull:        "room_full",
	reasonWatchLimit:      "watch_limit",
	reasonKicked:          "kicked",
	reasonDispatchFull:    "dispatch_full",
	reasonRoomBusy:        "room_busy",
}

// dropReason classifies frames for a session that were not delivered.
type dropReason uint8

const (
	dropBound       dropReason = iota // a held session's ResumeFrames or ResumeBytes was full
	dropEnded                         // the session had ended (or its grace did, unresumed)
	dropHandover                      // a resume whose old edge handed nothing over
	dropDispatch                      // the dispatchers' channel was full (the edge is overloaded)
	dropJoinPending                   // a room frame over the bounds of a pending join
	numDropReasons
)

var dropNames = [numDropReasons]string{"resume_bound", "ended", "no_handover", "dispatch_full", "join_pending"}

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
var relayTypes = [...]protocol.Type{protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave, protocol.TypeMessage}

// stats are the edge's counters: plain atomics on the hot path, read by the
// Prometheus collector and by Stats.
type stats struct {
	connections   atomic.Int64 // open sockets
	users         atomic.Int64 // logged-in sockets
	held          atomic.Int64 // sessions held for a resume
	relayed       [protocol.TypeUnwatch + 1]atomic.Uint64
	kept          atomic.Uint64 // frames kept for held sessions
	duplicates    atomic.Uint64 // frames that reached a resumed session twice (delivered once)
	lostInTransit atomic.Uint64 // frames for sessions here that never arrived (seen by HeaderTrack)
	handedOver    atomic.Uint64 // sessions handed over to a resume on another connection
	checks        atomic.Uint64 // users-bucket lookups of new targets
	dropped       [numDropReasons]atomic.Uint64
	errors        [numReasons]atomic.Uint64
	logins        [numLoginResults]atomic.Uint64
	latency       prometheus.Histogram // publish at the sender's edge to hand-off to the socket here
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
	descHeld        = prometheus.NewDesc("signal_edge_held_sessions", "Resumable sessions held after a drop, waiting for a resume.", []string{"edge"}, nil)
	descKept        = prometheus.NewDesc("signal_edge_frames_kept_total", "Frames kept for held sessions.", []string{"edge"}, nil)
	descDropped     = prometheus.NewDesc("signal_edge_frames_dropped_total", "Frames for a session that were not delivered (their senders are told), by reason.", []string{"edge", "reason"}, nil)
	descDuplicates  = prometheus.NewDesc("signal_edge_frames_deduplicated_total", "Frames that reached a resumed session through both its old and new edge, delivered once.", []string{"edge"}, nil)
	descLost        = prometheus.NewDesc("signal_edge_frames_lost_in_transit_total", "Frames for sessions on this edge that never arrived (a NATS server failed with them); their senders are told.", []string{"edge"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnections
	ch <- descUsers
	ch <- descRelayed
	ch <- descErrors
	ch <- descLogins
	ch <- descHeld
	ch <- descKept
	ch <- descDropped
	ch <- descDuplicates
	ch <- descLost
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
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(s.held.Load()), id)
	ch <- prometheus.MustNewConstMetric(descKept, prometheus.CounterValue, float64(s.kept.Load()), id)
	ch <- prometheus.MustNewConstMetric(descDuplicates, prometheus.CounterValue, float64(s.duplicates.Load()), id)
	ch <- prometheus.MustNewConstMetric(descLost, prometheus.CounterValue, float64(s.lostInTransit.Load()), id)
	for r := range numDropReasons {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.dropped[r].Load()), id, dropNames[r])
	}
	s.latency.Collect(ch)
}
