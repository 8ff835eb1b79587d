// Package edge is the WebSocket front of the signaling system. An Edge owns
// client sockets and nothing that must survive it: it parses each client
// frame, stamps the authenticated sender, and publishes the frame for the
// target to "user.<token>" (or a room's "room.<token>"), where NATS carries
// it to the edges that subscribed that subject. Names and room seats are
// claimed and released through the registry service (package registry,
// bodies in package wire).
//
// The wire protocol is the classic tutorial's, with extensions (rooms,
// presence, app messages, opt-in resume): the README's protocol tables are
// the contract, and clients written for the tutorial's Node server work
// unchanged.
//
// Files, by concern: edge.go (the Edge, its life), config.go, conn.go (a
// client connection's life), frames.go (reading WebSocket frames),
// writer.go (writing them), dispatch.go (a client message to its handler),
// session.go (a logged-in session and its states), login.go, registry.go
// (requests to the registry), relay.go (frames out to NATS), deliver.go
// (frames in from NATS), peers.go, resume.go (held sessions and hand-over),
// rooms.go, presence.go, lease.go, pinger.go, guard.go (admission and
// limits), poll_linux.go (the epoll reader), metrics.go, page.go (the demo
// page).
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
const Version = "0.2.0"

// Edge serves WebSocket clients. Create it with New, serve with Serve (or
// use it as an http.Handler), and stop it with Shutdown.
type Edge struct {
	cfg      Config
	log      *slog.Logger
	nc       *nats.Conn
	instance string
	js       jetstream.JetStream
	kvMu     sync.Mutex
	kv       jetstream.KeyValue // users bucket, read only here

	// User and room subscriptions deliver to these channels, each drained
	// by its own goroutine (one per CPU: a delivery may write to the
	// socket); a session's messages always go through the same one, in
	// order.
	msgs     []chan *nats.Msg
	dispWG   sync.WaitGroup
	inline   inlineIndex // sessions whose frames the NATS read path delivers (inline.go)
	nrPrefix string      // reply subject prefix: "<inbox>." + conn id + "." + target token
	subs     []*nats.Subscription
	svc      micro.Service
	srv      *http.Server
	poll     *poller // nil: a reading goroutine per connection

	conns    connTable
	sessions sessionTable
	peers    peerIndex
	watchers watchIndex
	rooms    roomTable
	marks    sync.Map // dispatcher sentinel *nats.Msg -> chan struct{}

	closing atomic.Bool
	connWG  sync.WaitGroup
	retry   retryQueue

	// Background work: stop is closed by Shutdown; stopCtx ends when
	// Shutdown's context does, and bounds every registry request made
	// while stopping.
	bgWG       sync.WaitGroup
	bgMu       sync.Mutex // guards bgDone and bgWG.Add against Shutdown's Wait
	bgDone     bool
	stop       chan struct{}
	stopCtx    context.Context
	cancelStop context.CancelFunc
	checks     chan struct{} // bounds the online checks in flight

	// The heartbeat's last tick (Unix ns), and whether the sessions are to
	// be checked before clients may send again (the edge was paused).
	lastTick  atomic.Int64
	suspect   atomic.Bool
	verifying sync.Mutex

	prevErrHandler nats.ErrHandler // the connection's, restored by Shutdown

	stats *stats
}

// New creates an Edge: it subscribes what every edge needs and announces
// itself as the micro service "edge". It serves no client until Serve. It
// returns an error wrapping ErrConfig for a Config it refuses.
func New(cfg Config) (*Edge, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Edge{
		cfg:      cfg,
		log:      log.With("svc", "edge", "edge_id", cfg.ID),
		nc:       cfg.NC,
		instance: cfg.Instance,
		stop:     make(chan struct{}),
		checks:   make(chan struct{}, 64),
		stats:    newStats(cfg.ID),
	}
	e.conns.init()
	e.sessions.init()
	e.peers.init()
	e.watchers.init()
	e.rooms.init(e)
	e.stopCtx, e.cancelStop = context.WithCancel(context.Background())
	e.prevErrHandler = e.nc.ErrorHandler()
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	e.nrPrefix = e.nc.NewInbox() + "."
	for _, s := range []struct {
		subj string
		fn   nats.MsgHandler
	}{
		{e.nrPrefix + ">", e.onReply},
		{subject.EdgeRefused(cfg.ID), e.onRefused},
		{subject.PresenceOfflineAll, e.onOffline},
		{subject.PresenceOnlineAll, e.onOnline},
	} {
		sub, err := e.nc.Subscribe(s.subj, s.fn)
		if err != nil {
			e.unsubscribeAll()
			return nil, fmt.Errorf("edge: %w", err)
		}
		e.subs = append(e.subs, sub)
	}
	if err := e.addService(); err != nil {
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
	queue := dispatchQueue
	if cfg.dispatchQueue > 0 {
		queue = cfg.dispatchQueue
	}
	for i := range e.msgs {
		e.msgs[i] = make(chan *nats.Msg, max(1, queue/len(e.msgs)))
		e.dispWG.Add(1)
		go e.dispatch(e.msgs[i])
	}
	e.nc.SetErrorHandler(e.onAsyncError(e.prevErrHandler))
	e.goBG(e.logoutRetrier)
	e.goBG(e.heartbeat)
	e.goBG(e.pinger)
	e.srv = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.HandshakeTimeout, // cleared by the upgrade for WebSockets
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	// Ready means the server routes to this edge: the SUBs have arrived.
	if err := e.nc.FlushTimeout(cfg.RegistryTimeout); err != nil {
		e.log.Warn("NATS did not confirm the edge's subscriptions yet", "err", err)
	}
	e.log.Info("edge started", "listen", cfg.Listen, "instance", e.instance)
	return e, nil
}

// addService announces the edge as the micro service "edge" with its
// status and hand-over endpoints.
func (e *Edge) addService() error {
	var err error
	e.svc, err = micro.AddService(e.nc, micro.Config{
		Name:        "edge",
		Version:     Version,
		Description: "WebSocket signaling edge",
		Metadata: map[string]string{
			"id":       e.cfg.ID,
			"listen":   e.cfg.Listen,
			"instance": e.instance,
		},
		StatsHandler: func(*micro.Endpoint) any { return e.Stats() },
	})
	if err != nil {
		return err
	}
	// "nats req edge.<id>.status ''" answers with the edge's counters.
	err = errors.Join(
		e.svc.AddEndpoint("status", micro.HandlerFunc(func(req micro.Request) {
			_ = req.RespondJSON(e.Stats())
		}), micro.WithEndpointSubject(subject.EdgeStatus(e.cfg.ID)), micro.WithEndpointQueueGroupDisabled()),
		e.svc.AddEndpoint("handover", micro.HandlerFunc(e.handleHandover),
			micro.WithEndpointSubject(subject.EdgeHandover(e.cfg.ID)), micro.WithEndpointQueueGroupDisabled()),
	)
	if err != nil {
		_ = e.svc.Stop()
	}
	return err
}

// Stats are the edge's counters, as "nats micro stats edge" and the status
// endpoint show them.
type Stats struct {
	ID           string `json:"id"`
	Instance     string `json:"instance"`
	Connections  int64  `json:"connections"`
	Users        int64  `json:"users"`
	Held         int64  `json:"held"`
	Relayed      uint64 `json:"relayed"`
	Errors       uint64 `json:"errors"`
	SlowClients  uint64 `json:"slow_clients"`
	LoginsOK     uint64 `json:"logins_ok"`
	LoginsTaken  uint64 `json:"logins_refused"`
	DeadSockets  uint64 `json:"dead_sockets"`
	Dropped      uint64 `json:"dropped"`
	Kept         uint64 `json:"kept"`
	Lookups      uint64 `json:"lookups"`
	Deduplicated uint64 `json:"deduplicated"`
	// LostInTransit counts frames for sessions here that never arrived
	// (a gap in their route's HeaderTrack); their senders were told.
	LostInTransit uint64 `json:"lost_in_transit"`
}

// Stats returns a snapshot of the edge's counters.
func (e *Edge) Stats() Stats {
	s := e.stats
	st := Stats{
		ID:            e.cfg.ID,
		Instance:      e.instance,
		Connections:   s.connections.Load(),
		Users:         s.users.Load(),
		Held:          s.held.Load(),
		SlowClients:   s.errors[reasonSlowClient].Load(),
		DeadSockets:   s.errors[reasonDeadSocket].Load(),
		LoginsOK:      s.logins[loginOK].Load() + s.logins[loginResumed].Load(),
		LoginsTaken:   s.logins[loginTaken].Load() + s.logins[loginInvalid].Load(),
		Kept:          s.kept.Load(),
		Lookups:       s.checks.Load(),
		Deduplicated:  s.duplicates.Load(),
		LostInTransit: s.lostInTransit.Load(),
	}
	for t := range s.relayed {
		st.Relayed += s.relayed[t].Load()
	}
	for r := range numReasons {
		st.Errors += s.errors[r].Load()
	}
	for r := range numDropReasons {
		st.Dropped += s.dropped[r].Load()
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

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// lingerAfterDeadline is how long Shutdown still waits for connections and
// background work once its context has ended: their registry requests end
// with the context, their sockets are cut, so they finish at once.
const lingerAfterDeadline = 500 * time.Millisecond

// Shutdown stops the edge in order, every step bounded by ctx: stop
// accepting; send every client a close frame with 1001 (going away) and
// wait for their connections to end, which releases their names and sends
// leave to their peers; release the held sessions and retry failed
// logouts, all at once; then stop the background work, the dispatchers,
// the micro service and the subscriptions. The caller drains the NATS
// connection afterwards. What ctx's end leaves unreleased (NATS is gone,
// say) is left to the registry's lease, and logged with a count; Shutdown
// then returns ctx's error.
func (e *Edge) Shutdown(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	stopWatch := context.AfterFunc(ctx, e.cancelStop)
	defer stopWatch()
	e.log.Info("edge shutting down", "connections", e.stats.connections.Load())
	err := e.srv.Shutdown(ctx) // hijacked sockets are not its business

	conns := e.conns.all(nil)
	for _, c := range conns {
		c.closeWith(closeGoingAway)
	}
	if !waitFor(ctx, &e.connWG, 0) {
		e.log.Warn("shutdown: connections still open at the deadline; cutting them", "connections", len(e.conns.all(nil)))
		for _, c := range e.conns.all(nil) {
			c.abort()
		}
		waitFor(context.Background(), &e.connWG, lingerAfterDeadline)
	}
	// Held sessions and failed logouts: all at once, under ctx.
	e.releaseAllHeld()
	e.bgMu.Lock()
	e.bgDone = true
	e.bgMu.Unlock()
	close(e.stop)
	if !waitFor(ctx, &e.bgWG, 0) {
		waitFor(context.Background(), &e.bgWG, lingerAfterDeadline)
	}
	if left := e.retry.len(); left > 0 {
		e.log.Warn("shutdown: logouts left to the registry's lease", "names", left)
	}
	if e.poll != nil {
		e.poll.close()
	}
	// Every session's subscription goes before its dispatcher channel.
	for _, s := range e.sessions.close() {
		s.unsubscribe()
	}
	e.rooms.unsubscribeAll()
	e.inline.detach(e)
	for _, ch := range e.msgs {
		close(ch)
	}
	e.dispWG.Wait()
	err = errors.Join(err, e.svc.Stop())
	e.unsubscribeAll()
	e.nc.SetErrorHandler(e.prevErrHandler)
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	e.log.Info("edge stopped")
	return err
}

// waitFor waits for wg until ctx ends, or for d at most if d > 0; true if
// wg is done. The goroutine it starts ends with wg.
func waitFor(ctx context.Context, wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
	case <-timeout:
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// goBG runs fn as background work that Shutdown stops (close of e.stop)
// and waits for.
func (e *Edge) goBG(fn func()) { e.tryBG(fn) }

// tryBG is goBG that reports whether fn was started: once Shutdown has
// stopped the background work, it is not.
func (e *Edge) tryBG(fn func()) bool {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	if e.bgDone {
		return false
	}
	e.bgWG.Add(1)
	go func() {
		defer e.bgWG.Done()
		fn()
	}()
	return true
}

// reqCtx is the context of one registry request: RegistryTimeout, and no
// longer than Shutdown's context.
func (e *Edge) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.stopCtx, e.cfg.RegistryTimeout)
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

// connTable holds every connection of the edge, by id (poller events carry
// the id), and the count per client address.
type connTable struct {
	mu    sync.RWMutex
	byID  map[uint64]*conn
	perIP map[netip.Addr]int
	// slots counts the admitted connections, from admit to release: the
	// ones in byID and the ones still upgrading, so that upgrades running
	// at once cannot pass the edge's bound together.
	slots int
	next  atomic.Uint64
}

func (t *connTable) init() {
	t.byID = make(map[uint64]*conn)
	t.perIP = make(map[netip.Addr]int)
}

func (t *connTable) get(id uint64) *conn {
	t.mu.RLock()
	c := t.byID[id]
	t.mu.RUnlock()
	return c
}

// all appends every connection to dst.
func (t *connTable) all(dst []*conn) []*conn {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, c := range t.byID {
		dst = append(dst, c)
	}
	return dst
}

func (t *connTable) remove(c *conn) {
	t.mu.Lock()
	delete(t.byID, c.id)
	t.mu.Unlock()
}
