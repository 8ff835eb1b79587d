// Package edge is the WebSocket front of the signaling system. An Edge owns
// client sockets and nothing that must survive it: it parses each client
// frame, stamps the authenticated sender, and publishes the frame for the
// target to "user.<token>", where NATS carries it to the one edge that
// subscribed that subject when the target logged in. Names are claimed and
// released through the registry service (registry.login, registry.logout).
//
// The wire protocol is the classic tutorial's (see DESIGN.md): clients
// written for that Node server work unchanged.
package edge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/subject"
)

// Version is the edge's micro service version.
const Version = "0.1.0"

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
	// DefaultRegistryTimeout bounds each registry request.
	DefaultRegistryTimeout = 5 * time.Second
	// DefaultCloseTimeout is how long a connection waits for the client's
	// close frame after sending its own.
	DefaultCloseTimeout = 2 * time.Second
	// DefaultHandshakeTimeout bounds reading the HTTP upgrade request.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultHeartbeat refreshes the edge's lease four times per default
	// registry lease (10s).
	DefaultHeartbeat = 2500 * time.Millisecond
	// DefaultPingAfter and DefaultPongTimeout: a silent client is pinged
	// after 20s and dropped 10s later, so a half-open TCP connection holds
	// its name for at most about 30s.
	DefaultPingAfter   = 20 * time.Second
	DefaultPongTimeout = 10 * time.Second
	// DefaultResumeGrace is how long a dropped session can be resumed.
	DefaultResumeGrace = 30 * time.Second
	// dispatchQueue is the capacity of the channels that the user
	// subscriptions of the edge deliver to, all channels together.
	dispatchQueue = 1 << 16
)

// Config of an Edge. Zero values select the defaults beside them.
type Config struct {
	// NC is the NATS connection. Required.
	NC *nats.Conn
	// ID is the edge's stable id, shown in "nats micro ls" and stored with
	// every name the edge holds. Required.
	ID string
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
	// RegistryTimeout bounds registry requests. Zero: DefaultRegistryTimeout.
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
	// PingAfter is how long a client may stay silent before it is pinged.
	// Zero: DefaultPingAfter.
	PingAfter time.Duration
	// PongTimeout is how long a pinged client has to send anything (its
	// pong) before it is disconnected. Zero: DefaultPongTimeout.
	PongTimeout time.Duration
	// ResumeGrace is how long the name of a connection that dropped
	// (closed without a close frame either way) stays held so that its
	// client can log in again with its resume token and take it over; its
	// peer gets leave only when the grace ends without a resume. A close
	// frame from either side releases the name at once. Zero:
	// DefaultResumeGrace; negative: release at once, always.
	ResumeGrace time.Duration
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
}

// Edge serves WebSocket clients. Create it with New, serve with Serve (or
// use it as an http.Handler), and stop it with Shutdown.
type Edge struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	instance string // random per process: tells this run from an earlier one with the same ID

	// User subscriptions deliver to these channels, each drained by its
	// own goroutine (one per CPU: a delivery may write to the socket); a
	// connection's messages always go through the same one, in order.
	msgs     []chan *nats.Msg
	nrPrefix string // reply subject prefix: "<inbox>." + conn id + "." + target token
	subs     []*nats.Subscription
	svc      micro.Service
	srv      *http.Server
	poll     *poller // nil: a reading goroutine per connection
	js       jetstream.JetStream
	kvMu     sync.Mutex
	kv       jetstream.KeyValue // users bucket, read-only here

	mu      sync.RWMutex
	bySub   map[*nats.Subscription]*conn
	bySes   map[string]*conn             // logged-in users by session id
	pending map[*nats.Subscription]*conn // subscriptions of logins in flight
	byID    map[uint64]*conn             // every connection (poller events carry the id)
	perIP   map[netip.Addr]int
	peers   map[string]map[*conn]struct{} // peer token -> conns whose peer it is
	held    map[string]*heldSession       // dropped sessions by session id, kept for resume
	nextID  atomic.Uint64

	closing atomic.Bool
	connWG  sync.WaitGroup
	retryMu sync.Mutex
	retry   []logoutJob // logouts to try again
	bgWG    sync.WaitGroup
	stopBG  chan struct{}

	stats *stats
}

// New creates an Edge: it subscribes what every edge needs and announces
// itself as the micro service "edge". It serves no client until Serve.
func New(cfg Config) (*Edge, error) {
	if cfg.NC == nil {
		return nil, errors.New("edge: no NATS connection")
	}
	if cfg.ID == "" {
		return nil, errors.New("edge: no id")
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	if cfg.WriteQueue == 0 {
		cfg.WriteQueue = DefaultWriteQueue
	}
	if cfg.WriteQueueBytes == 0 {
		cfg.WriteQueueBytes = DefaultWriteQueueBytes
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.RegistryTimeout == 0 {
		cfg.RegistryTimeout = DefaultRegistryTimeout
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxLogins == 0 {
		cfg.MaxLogins = DefaultMaxLogins
	}
	if cfg.MaxCandidates == 0 {
		cfg.MaxCandidates = DefaultMaxCandidates
	}
	if cfg.ResumeGrace == 0 {
		cfg.ResumeGrace = DefaultResumeGrace
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.PingAfter == 0 {
		cfg.PingAfter = DefaultPingAfter
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Edge{
		cfg:      cfg,
		log:      log.With("svc", "edge", "edge_id", cfg.ID),
		nc:       cfg.NC,
		instance: randomID(8),
		bySub:    make(map[*nats.Subscription]*conn),
		bySes:    make(map[string]*conn),
		pending:  make(map[*nats.Subscription]*conn),
		byID:     make(map[uint64]*conn),
		perIP:    make(map[netip.Addr]int),
		peers:    make(map[string]map[*conn]struct{}),
		stopBG:   make(chan struct{}),
		stats:    newStats(cfg.ID),
	}
	var err error
	e.nrPrefix = e.nc.NewInbox() + "."
	if e.js, err = jetstream.New(e.nc); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}

	sub, err := e.nc.Subscribe(e.nrPrefix+">", e.onNoResponders)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e.subs = append(e.subs, sub)
	sub, err = e.nc.Subscribe(subject.PresenceOfflineAll, e.onOffline)
	if err != nil {
		e.unsubscribeAll()
		return nil, fmt.Errorf("edge: %w", err)
	}
	e.subs = append(e.subs, sub)

	e.svc, err = micro.AddService(e.nc, micro.Config{
		Name:        "edge",
		Version:     Version,
		Description: "WebSocket signaling edge",
		Metadata: map[string]string{
			"id":       cfg.ID,
			"listen":   cfg.Listen,
			"instance": e.instance,
		},
		StatsHandler: func(*micro.Endpoint) any { return e.Stats() },
	})
	if err != nil {
		e.unsubscribeAll()
		return nil, fmt.Errorf("edge: %w", err)
	}
	// "nats req edge.<id>.status ''" answers with the edge's counters.
	err = e.svc.AddEndpoint("status", micro.HandlerFunc(func(req micro.Request) {
		_ = req.RespondJSON(e.Stats())
	}), micro.WithEndpointSubject("edge."+cfg.ID+".status"), micro.WithEndpointQueueGroupDisabled())
	if err != nil {
		_ = e.svc.Stop()
		e.unsubscribeAll()
		return nil, fmt.Errorf("edge: %w", err)
	}

	if !cfg.NoPoller {
		if e.poll, err = newPoller(e); err != nil {
			e.log.Info("no socket poller; one goroutine per connection", "err", err)
			e.poll = nil
		}
	}
	e.msgs = make([]chan *nats.Msg, max(1, runtime.GOMAXPROCS(0)))
	for i := range e.msgs {
		e.msgs[i] = make(chan *nats.Msg, dispatchQueue/len(e.msgs))
		go e.dispatch(e.msgs[i])
	}
	e.bgWG.Add(3)
	go e.logoutRetrier()
	go e.heartbeat()
	go e.pinger()
	e.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.HandshakeTimeout, // cleared by the upgrade for WebSockets
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	e.log.Info("edge started", "listen", cfg.Listen, "instance", e.instance)
	return e, nil
}

// Stats are the edge's counters, as "nats micro stats edge" and the status
// endpoint show them.
type Stats struct {
	ID          string `json:"id"`
	Instance    string `json:"instance"`
	Connections int64  `json:"connections"`
	Users       int64  `json:"users"`
	Relayed     uint64 `json:"relayed"`
	Errors      uint64 `json:"errors"`
	SlowClients uint64 `json:"slow_clients"`
	LoginsOK    uint64 `json:"logins_ok"`
	LoginsTaken uint64 `json:"logins_refused"`
	DeadSockets uint64 `json:"dead_sockets"`
}

// Stats returns a snapshot of the edge's counters.
func (e *Edge) Stats() Stats {
	s := e.stats
	st := Stats{
		ID:          e.cfg.ID,
		Instance:    e.instance,
		Connections: s.connections.Load(),
		Users:       s.users.Load(),
		SlowClients: s.errors[reasonSlowClient].Load(),
		DeadSockets: s.errors[reasonDeadSocket].Load(),
		LoginsOK:    s.logins[loginOK].Load() + s.logins[loginResumed].Load(),
		LoginsTaken: s.logins[loginTaken].Load() + s.logins[loginInvalid].Load(),
	}
	for _, t := range relayTypes {
		st.Relayed += s.relayed[t].Load()
	}
	for r := range numReasons {
		st.Errors += s.errors[r].Load()
	}
	return st
}

// Serve accepts clients on ln until Shutdown. It returns nil after Shutdown.
func (e *Edge) Serve(ln net.Listener) error {
	err := e.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeHTTP upgrades WebSocket requests; other requests get the demo page
// (page.go).
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		e.servePage(w, r)
		return
	}
	if e.closing.Load() {
		w.Header().Set("Connection", "close")
		http.Error(w, "edge is shutting down", http.StatusServiceUnavailable)
		return
	}
	e.upgrade(w, r)
}

// appendConns appends every connection of the edge to dst.
func (e *Edge) appendConns(dst []*conn) []*conn {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, c := range e.byID {
		dst = append(dst, c)
	}
	return dst
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// Shutdown stops the edge in order: stop accepting; send every client a
// close frame with 1001 (going away) and wait, within ctx, for their
// connections to end, which releases their names and sends leave to their
// peers; then stop the micro service and the subscriptions. The caller
// drains the NATS connection afterwards.
func (e *Edge) Shutdown(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	e.log.Info("edge shutting down", "connections", e.stats.connections.Load())
	err := e.srv.Shutdown(ctx) // hijacked sockets are not its business

	conns := e.appendConns(nil)
	for _, c := range conns {
		c.closeWith(closeGoingAway)
	}
	done := make(chan struct{})
	go func() { e.connWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.log.Warn("shutdown: connections still open at the deadline; closing them")
		for _, c := range conns {
			c.abort()
		}
		err = errors.Join(err, ctx.Err())
		// Their readers see the end (the poller reports it) and tear them
		// down; give that a moment, then do it here for any left.
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	if e.poll != nil {
		e.poll.close()
	}
	for _, c := range e.appendConns(nil) {
		c.rmu.Lock()
		c.teardown()
		c.rmu.Unlock()
	}
	// Dropped sessions waiting for a resume are released now, and logouts
	// that failed so far get one more try while NATS is still here.
	e.releaseHeld()
	close(e.stopBG)
	e.bgWG.Wait()
	err = errors.Join(err, e.svc.Stop())
	e.unsubscribeAll()
	e.log.Info("edge stopped")
	return err
}

func (e *Edge) unsubscribeAll() {
	for _, s := range e.subs {
		_ = s.Unsubscribe()
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
