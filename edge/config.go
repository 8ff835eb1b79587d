package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults for Config fields left zero.
const (
	// DefaultMaxFrameSize bounds one client message (all its fragments).
	// An SDP offer with many media sections is a few KiB; 64 KiB leaves room.
	DefaultMaxFrameSize = 64 << 10
	// DefaultWriteQueue is how many frames may wait for one client socket,
	// and DefaultWriteQueueBytes how many bytes. A call setup is an offer or
	// answer plus a few dozen candidates; the bounds leave room for bursts
	// from several senders at once while the socket's writer is busy.
	DefaultWriteQueue      = 1024
	DefaultWriteQueueBytes = 1 << 20
	// DefaultWriteTimeout bounds each socket write.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultRegistryTimeout bounds each registry request, its retries
	// included.
	DefaultRegistryTimeout = 5 * time.Second
	// DefaultCloseTimeout is how long a connection waits for the client's
	// close frame after sending its own.
	DefaultCloseTimeout = 2 * time.Second
	// DefaultHandshakeTimeout bounds reading the HTTP upgrade request.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultHeartbeat refreshes the edge's lease four times per default
	// registry lease (10s).
	DefaultHeartbeat = 2500 * time.Millisecond
	// DefaultFenceAfter is two heartbeats: with a failing heartbeat's own
	// bound (one heartbeat) it fences within three, well inside the
	// registry's default lease (10s), so that an edge cut off from the
	// buckets closes its sessions before the registry can give their names
	// away.
	DefaultFenceAfter = 2 * DefaultHeartbeat
	// DefaultPingAfter and DefaultPongTimeout: a silent client is pinged
	// after 20s and dropped 10s later, so a half-open TCP connection holds
	// its name for at most about 30s.
	DefaultPingAfter   = 20 * time.Second
	DefaultPongTimeout = 10 * time.Second
	// DefaultResumeGrace is how long a resumable session whose connection
	// dropped is held for its client to resume it.
	DefaultResumeGrace = 30 * time.Second
	// DefaultResumeFrames and DefaultResumeBytes bound the frames kept for
	// one held session: a call's candidates and a renegotiation fit.
	DefaultResumeFrames = 256
	DefaultResumeBytes  = 256 << 10
	// maxResumeBytes keeps a hand-over (the kept frames in one NATS
	// message) under NATS's default 1 MiB payload limit.
	maxResumeBytes = 512 << 10
	// DefaultMaxRooms bounds the rooms one connection may be in, and
	// DefaultMaxRoom the members of a room (the registry has a limit of
	// its own; the smaller one applies).
	DefaultMaxRooms = 16
	DefaultMaxRoom  = 16
	// DefaultMaxWatch bounds the names one connection may watch.
	DefaultMaxWatch = 256
	// dispatchQueue is the capacity of the channels that the user
	// subscriptions of the edge deliver to, all channels together.
	dispatchQueue = 1 << 16
)

// Config of an Edge. Zero values select the defaults beside them; negative
// values are refused by New unless a field says what they mean.
type Config struct {
	// NC is the NATS connection. Required. Name it
	// wire.EdgeConnName(ID, Instance), so that the registry recognises the
	// NATS server's event when it closes.
	NC *nats.Conn
	// ID is the edge's stable id, shown in "nats micro ls" and stored with
	// every name the edge holds. Required.
	ID string
	// Instance tells this process from an earlier one with the same ID.
	// Zero: random.
	Instance string
	// Listen is the address clients use, for the service metadata only.
	Listen string
	// MaxFrameSize bounds a client message in bytes; a bigger one closes the
	// connection with 1009. Zero: DefaultMaxFrameSize.
	MaxFrameSize int
	// WriteQueue bounds the frames waiting for one socket; a client that
	// lets it fill is disconnected. Zero: DefaultWriteQueue.
	WriteQueue int
	// WriteQueueBytes bounds the bytes waiting for one socket, likewise.
	// Zero: DefaultWriteQueueBytes.
	WriteQueueBytes int
	// WriteTimeout bounds each socket write. Zero: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// RegistryTimeout bounds each registry request, retries with other
	// registry instances included. Zero: DefaultRegistryTimeout.
	RegistryTimeout time.Duration
	// CloseTimeout bounds the wait for a client's close frame.
	// Zero: DefaultCloseTimeout.
	CloseTimeout time.Duration
	// HandshakeTimeout bounds reading the HTTP upgrade request and writing
	// its response, so that slow ("slowloris") clients cannot hold sockets
	// before they are clients. Zero: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Heartbeat is how often the edge refreshes its lease in the edges
	// bucket; it must be well under the registry's lease (10s by default).
	// Zero: DefaultHeartbeat.
	Heartbeat time.Duration
	// FenceAfter: when the edge's heartbeats have failed for this long, it
	// closes every session (4001): the registry may release their names
	// once its lease lapses, and a name must never have two owners. Keep
	// FenceAfter plus one Heartbeat under the registry's lease. Zero:
	// twice Heartbeat (DefaultFenceAfter with the default Heartbeat);
	// negative: never.
	FenceAfter time.Duration
	// PingAfter is how long a client may stay silent before it is pinged.
	// Zero: DefaultPingAfter.
	PingAfter time.Duration
	// PongTimeout is how long a pinged client has to send anything (its
	// pong) before it is disconnected. Zero: DefaultPongTimeout.
	PongTimeout time.Duration
	// ResumeGrace is how long a resumable session (its login asked for it)
	// whose connection ended without a close frame is held: frames for it
	// are kept, and its client may log in again with its resume token, on
	// any edge, and take it over. Sessions that did not ask, and every
	// session whose connection ends with a close frame, are released at
	// once. Zero: DefaultResumeGrace; negative: never hold.
	ResumeGrace time.Duration
	// ResumeFrames and ResumeBytes bound the frames kept for one held
	// session; a frame beyond them is dropped and its sender told that the
	// user is not online. Zero: DefaultResumeFrames, DefaultResumeBytes
	// (at most 512 KiB).
	ResumeFrames int
	ResumeBytes  int
	// MaxRooms bounds the rooms of one connection; MaxRoom the members of
	// a room. Zero: DefaultMaxRooms, DefaultMaxRoom.
	MaxRooms int
	MaxRoom  int
	// MaxWatch bounds the names one connection watches. Zero:
	// DefaultMaxWatch.
	MaxWatch int
	// NoCallEvents leaves call_start and call_end out of the SIGNAL_EVENTS
	// stream (for backends that do not read them: each is a JetStream
	// write, one per answer relayed). Zero: the edge publishes them.
	NoCallEvents bool
	// AllowedOrigins lists the browser origins (scheme://host[:port]) that
	// may connect; "*" allows all. Zero: pages on localhost and pages served
	// by this same host, plus every client that sends no Origin (not a
	// browser). A refused origin gets 403 at the upgrade.
	AllowedOrigins []string
	// Auth, when set, must accept every upgrade request (401 otherwise), and
	// the client may log in only with the name it grants. Zero: no
	// authentication, anyone may take any free name (the tutorial's way).
	Auth Authenticator
	// ICEServers, when set, appends the JSON array of ICE servers (TURN
	// credentials) for a user to dst; the login reply carries it as
	// "iceServers". Zero: no iceServers in the reply.
	ICEServers func(dst []byte, name string) []byte
	// TrustedProxies are the addresses whose X-Forwarded-For is believed.
	// Zero: none; the peer address is the client's.
	TrustedProxies []netip.Prefix
	// MaxConns bounds the edge's sockets (503 beyond). Zero:
	// DefaultMaxConns; negative: no bound.
	MaxConns int
	// MaxConnsPerIP bounds the sockets of one client address (429 beyond).
	// Zero: DefaultMaxConnsPerIP; negative: no bound.
	MaxConnsPerIP int
	// Rate is how many messages per second one connection may send (a
	// token bucket of Burst); over it, messages are dropped with an error
	// frame, and a connection that keeps flooding is closed with 1008.
	// Zero: DefaultRate and DefaultBurst; negative: no limit.
	Rate  float64
	Burst int
	// MaxLogins bounds login attempts per connection (then 1008). Zero:
	// DefaultMaxLogins.
	MaxLogins int
	// MaxCandidates bounds the candidates a connection sends between two
	// offers or answers. Zero: DefaultMaxCandidates.
	MaxCandidates int
	// NoPoller gives every connection its own reading goroutine even where
	// the edge can watch idle sockets with epoll (Linux), which saves a
	// goroutine and a read buffer per idle connection. Zero: the poller.
	NoPoller bool
	// Logger; zero: slog.Default().
	Logger *slog.Logger

	// dispatchQueue overrides dispatchQueue (tests).
	dispatchQueue int
}

// Authenticator checks the credentials of an upgrade request and returns
// the one name the client may log in with. The edge answers 401 to an
// error, before holding anything for the client.
type Authenticator interface {
	Authenticate(r *http.Request) (name string, err error)
}

// ErrConfig is wrapped by the errors New returns for a Config it refuses.
var ErrConfig = errors.New("edge: invalid config")

// defaults fills in zero fields and refuses values that would make the edge
// refuse everything or nothing.
func (cfg *Config) defaults() error {
	if cfg.NC == nil {
		return fmt.Errorf("%w: no NATS connection", ErrConfig)
	}
	if cfg.ID == "" {
		return fmt.Errorf("%w: no id", ErrConfig)
	}
	for _, v := range []struct {
		name string
		bad  bool
	}{
		{"MaxFrameSize", cfg.MaxFrameSize < 0}, {"WriteQueue", cfg.WriteQueue < 0},
		{"WriteQueueBytes", cfg.WriteQueueBytes < 0}, {"WriteTimeout", cfg.WriteTimeout < 0},
		{"RegistryTimeout", cfg.RegistryTimeout < 0}, {"CloseTimeout", cfg.CloseTimeout < 0},
		{"HandshakeTimeout", cfg.HandshakeTimeout < 0}, {"Heartbeat", cfg.Heartbeat < 0},
		{"PingAfter", cfg.PingAfter < 0}, {"PongTimeout", cfg.PongTimeout < 0},
		{"ResumeFrames", cfg.ResumeFrames < 0}, {"ResumeBytes", cfg.ResumeBytes < 0 || cfg.ResumeBytes > maxResumeBytes},
		{"MaxRooms", cfg.MaxRooms < 0}, {"MaxRoom", cfg.MaxRoom < 0}, {"MaxWatch", cfg.MaxWatch < 0},
		{"Burst", cfg.Burst < 0}, {"MaxLogins", cfg.MaxLogins < 0}, {"MaxCandidates", cfg.MaxCandidates < 0},
	} {
		if v.bad {
			return fmt.Errorf("%w: %s out of range", ErrConfig, v.name)
		}
	}
	setDefault(&cfg.MaxFrameSize, DefaultMaxFrameSize)
	setDefault(&cfg.WriteQueue, DefaultWriteQueue)
	setDefault(&cfg.WriteQueueBytes, DefaultWriteQueueBytes)
	setDefault(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDefault(&cfg.RegistryTimeout, DefaultRegistryTimeout)
	setDefault(&cfg.CloseTimeout, DefaultCloseTimeout)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.Heartbeat, DefaultHeartbeat)
	setDefault(&cfg.FenceAfter, 2*cfg.Heartbeat)
	setDefault(&cfg.PingAfter, DefaultPingAfter)
	setDefault(&cfg.PongTimeout, DefaultPongTimeout)
	setDefault(&cfg.ResumeGrace, DefaultResumeGrace)
	setDefault(&cfg.ResumeFrames, DefaultResumeFrames)
	setDefault(&cfg.ResumeBytes, DefaultResumeBytes)
	setDefault(&cfg.MaxRooms, DefaultMaxRooms)
	setDefault(&cfg.MaxRoom, DefaultMaxRoom)
	setDefault(&cfg.MaxWatch, DefaultMaxWatch)
	setDefault(&cfg.MaxConns, DefaultMaxConns)
	setDefault(&cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	setDefault(&cfg.Rate, DefaultRate)
	setDefault(&cfg.Burst, DefaultBurst)
	setDefault(&cfg.MaxLogins, DefaultMaxLogins)
	setDefault(&cfg.MaxCandidates, DefaultMaxCandidates)
	if cfg.Instance == "" {
		cfg.Instance = randomID(8)
	}
	return nil
}

func setDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}
