// Package registry is the only writer of who is online and of who is in
// which room. It is a NATS micro service ("registry", queue group
// "registry") with the endpoints registry.login, registry.logout,
// registry.join and registry.part for edges, and registry.users,
// registry.rooms and registry.kick for an application's backend and
// operators. It keeps one entry per logged-in name in the JetStream KV bucket
// "users" and one per room member in "rooms".
//
// A login is a KV Create, so when two edges race for a name exactly one wins,
// whatever the number of registry instances; a logout deletes the entry only
// if it still belongs to the session that asks. A join writes the member's
// key only if no other member of the room was written since the registry
// counted them, so the room limit is exact too. Every release of a name
// (logout, a lapsed or lost edge, a kick) is announced on
// presence.offline.<token>, parts the session's rooms and is an event in the
// stream SIGNAL_EVENTS (package events). The README ("NATS subjects and
// buckets", "When things fail") is the contract; package wire holds the
// request and reply bodies.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Version is the micro service version.
const Version = "0.2.0"

// Defaults for Config fields left zero.
const (
	DefaultReplicas  = 1
	DefaultWorkers   = 64
	DefaultTimeout   = 5 * time.Second
	DefaultMarkerTTL = time.Minute
	// DefaultMaxRoom is the largest room: a mesh call of 16 sends each
	// member's media to 15 others, about what a browser can take.
	DefaultMaxRoom = 16
	// DefaultDisconnectGrace is how long an edge whose NATS connection
	// closed has to show that it lives (it answers on its status endpoint
	// once it reconnected, to another NATS node perhaps) before its names
	// are released: nats.go reconnects within a few hundred milliseconds.
	DefaultDisconnectGrace = 500 * time.Millisecond
)

// Config of a Registry. Zero values select the defaults beside them.
type Config struct {
	// NC is the NATS connection. Required.
	NC *nats.Conn
	// Replicas of the KV buckets and the events stream when this registry
	// creates them. Zero: DefaultReplicas (1, for a single server); use 3
	// in a cluster.
	Replicas int
	// Cluster, when set, places the buckets and the events stream in that
	// NATS cluster (the home cluster of a super-cluster). Zero: wherever
	// JetStream puts them.
	Cluster string
	// Workers is how many requests are served at once. Micro handlers run
	// one at a time per endpoint, so they hand requests to this many
	// workers. Zero: DefaultWorkers.
	Workers int
	// Timeout bounds each KV operation. Zero: DefaultTimeout.
	Timeout time.Duration
	// MarkerTTL is how long a released name's (or a parted member's) delete
	// marker stays in its bucket (watchers see the release; then it is
	// gone, so the bucket does not grow with every name ever used). Zero:
	// DefaultMarkerTTL.
	MarkerTTL time.Duration
	// Lease is how long an edge may go without a heartbeat before the
	// registry releases its names. Zero: DefaultLease.
	Lease time.Duration
	// Sweep is how often lapsed leases are looked for. Zero: DefaultSweep.
	Sweep time.Duration
	// MaxRoom bounds a room's members; a join request may ask for less.
	// Zero: DefaultMaxRoom.
	MaxRoom int
	// EventsMaxAge and EventsMaxBytes bound the events stream. Zero: the
	// defaults of package events; negative bytes: no byte limit.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// DisconnectEvents is the subject of the NATS server's client
	// disconnect events, as the account imports them. Zero:
	// subject.DisconnectEvents; "-": none (then only the lease notices a
	// dead edge).
	DisconnectEvents string
	// DisconnectGrace: see DefaultDisconnectGrace. Zero: that.
	DisconnectGrace time.Duration
	// Logger; zero: slog.Default().
	Logger *slog.Logger
}

// Registry serves the registry's endpoints. Create it with New and stop it
// with Stop.
type Registry struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	users  jetstream.KeyValue
	edges  jetstream.KeyValue
	rooms  jetstream.KeyValue
	svc    micro.Service
	view   *view
	events *eventPub

	// Requests go from the micro handlers to the workers through work.
	// closed (under qmu) turns new requests away with 503 once Stop began;
	// inside counts handlers between that check and their send, so that
	// work is closed only when no handler can send on it.
	work   chan job
	qmu    sync.Mutex
	qcond  *sync.Cond
	closed bool
	inside int

	workers sync.WaitGroup
	wg      sync.WaitGroup // background goroutines, started by goBG
	bgMu    sync.Mutex     // guards bgDone and wg.Add against wg.Wait
	bgDone  bool
	bg      context.Context
	stopBG  context.CancelFunc
	stopped sync.Once
	metrics *registryMetrics
}

type job struct {
	req micro.Request
	fn  func(micro.Request)
}

// New creates (or updates) the KV buckets and the events stream, starts the
// micro service and returns once its subscriptions are in place on the
// server. Call Stop when done.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{
		cfg:     cfg,
		log:     log.With("svc", "registry"),
		nc:      cfg.NC,
		work:    make(chan job, 4*cfg.Workers),
		metrics: newMetrics(),
	}
	r.qcond = sync.NewCond(&r.qmu)
	r.bg, r.stopBG = context.WithCancel(context.Background())
	var err error
	if r.js, err = jetstream.New(cfg.NC); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if err := r.createBuckets(ctx); err != nil {
		return nil, err
	}
	r.events = newEventPub(r)
	if r.view, err = startView(r); err != nil {
		r.stopBackground()
		return nil, fmt.Errorf("registry: watching the buckets: %w", err)
	}
	if err := r.watchDisconnects(); err != nil {
		r.stopBackground()
		return nil, fmt.Errorf("registry: disconnect events: %w", err)
	}
	for range cfg.Workers {
		r.workers.Add(1)
		go r.worker()
	}
	if err := r.addService(); err != nil {
		r.Stop()
		return nil, fmt.Errorf("registry: %w", err)
	}
	// Ready means the server routes requests here: the SUBs have arrived.
	if err := cfg.NC.FlushTimeout(cfg.Timeout); err != nil {
		r.Stop()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.log.Info("registry started", "id", r.svc.Info().ID, "replicas", cfg.Replicas, "cluster", cfg.Cluster)
	return r, nil
}

// defaults fills in zero fields and rejects values that would make the
// registry refuse everything.
func (cfg *Config) defaults() error {
	if cfg.NC == nil {
		return errors.New("registry: no NATS connection")
	}
	for _, v := range []struct {
		name string
		neg  bool
	}{
		{"Replicas", cfg.Replicas < 0}, {"Workers", cfg.Workers < 0}, {"Timeout", cfg.Timeout < 0},
		{"MarkerTTL", cfg.MarkerTTL < 0}, {"Lease", cfg.Lease < 0}, {"Sweep", cfg.Sweep < 0},
		{"MaxRoom", cfg.MaxRoom < 0}, {"EventsMaxAge", cfg.EventsMaxAge < 0}, {"DisconnectGrace", cfg.DisconnectGrace < 0},
	} {
		if v.neg {
			return fmt.Errorf("registry: %s must not be negative", v.name)
		}
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = DefaultReplicas
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MarkerTTL == 0 {
		cfg.MarkerTTL = DefaultMarkerTTL
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Sweep == 0 {
		cfg.Sweep = DefaultSweep
	}
	if cfg.MaxRoom == 0 {
		cfg.MaxRoom = DefaultMaxRoom
	}
	if cfg.DisconnectEvents == "" {
		cfg.DisconnectEvents = subject.DisconnectEvents
	}
	if cfg.DisconnectGrace == 0 {
		cfg.DisconnectGrace = DefaultDisconnectGrace
	}
	return nil
}

func (r *Registry) placement() *jetstream.Placement {
	if r.cfg.Cluster == "" {
		return nil
	}
	return &jetstream.Placement{Cluster: r.cfg.Cluster}
}

func (r *Registry) createBuckets(ctx context.Context) error {
	var err error
	r.users, err = r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         subject.UsersBucket,
		Description:    "who is online: name token -> edge, session",
		History:        1,
		Replicas:       r.cfg.Replicas,
		Placement:      r.placement(),
		LimitMarkerTTL: r.cfg.MarkerTTL,
	})
	if err != nil {
		return fmt.Errorf("registry: bucket %s: %w", subject.UsersBucket, err)
	}
	r.edges, err = r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      subject.EdgesBucket,
		Description: "edge leases: edge id -> instance, refreshed by heartbeats",
		History:     1,
		TTL:         3 * r.cfg.Lease,
		Replicas:    r.cfg.Replicas,
		Placement:   r.placement(),
	})
	if err != nil {
		return fmt.Errorf("registry: bucket %s: %w", subject.EdgesBucket, err)
	}
	r.rooms, err = r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         subject.RoomsBucket,
		Description:    "room members: room token.member token -> edge, since",
		History:        1,
		Replicas:       r.cfg.Replicas,
		Placement:      r.placement(),
		LimitMarkerTTL: r.cfg.MarkerTTL,
	})
	if err != nil {
		return fmt.Errorf("registry: bucket %s: %w", subject.RoomsBucket, err)
	}
	sc := events.StreamConfig(r.cfg.EventsMaxAge, r.cfg.EventsMaxBytes, r.cfg.Replicas)
	sc.Placement = r.placement()
	if _, err := events.Ensure(ctx, r.js, sc); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

func (r *Registry) addService() error {
	var err error
	r.svc, err = micro.AddService(r.nc, micro.Config{
		Name:        "registry",
		Version:     Version,
		Description: "unique usernames and rooms across the signaling cluster",
		QueueGroup:  subject.RegistryGroup,
	})
	if err != nil {
		return err
	}
	g := r.svc.AddGroup(subject.RegistryGroup, micro.WithGroupQueueGroup(subject.RegistryGroup))
	return errors.Join(
		g.AddEndpoint("login", r.enqueue(r.handleLogin)),
		g.AddEndpoint("logout", r.enqueue(r.handleLogout)),
		g.AddEndpoint("join", r.enqueue(r.handleJoin)),
		g.AddEndpoint("part", r.enqueue(r.handlePart)),
		g.AddEndpoint("users", r.enqueue(r.handleUsers)),
		g.AddEndpoint("rooms", r.enqueue(r.handleRooms)),
		g.AddEndpoint("kick", r.enqueue(r.handleKick)),
	)
}

// Stop stops the micro service and answers every request it accepted:
// those handed to the workers are served, those that reach a handler from
// now on (the service's subscriptions drain asynchronously) get 503, so that
// their edges retry with another registry instance. Then the background
// work (the watches, the lease sweep, releases in flight) ends.
func (r *Registry) Stop() error {
	var err error
	r.stopped.Do(func() {
		if r.svc != nil {
			err = r.svc.Stop()
		}
		r.qmu.Lock()
		r.closed = true
		for r.inside > 0 {
			r.qcond.Wait()
		}
		r.qmu.Unlock()
		close(r.work)
		r.workers.Wait()
		r.stopBackground()
		r.log.Info("registry stopped")
	})
	return err
}

// stopBackground ends every goroutine the registry started and waits.
func (r *Registry) stopBackground() {
	r.bgMu.Lock()
	r.bgDone = true
	r.bgMu.Unlock()
	r.stopBG()
	r.wg.Wait()
	if r.events != nil {
		r.events.stop()
	}
}

// enqueue returns the micro handler that hands a request to the workers.
// When they are all busy it waits: requests then queue in the endpoint's
// subscription (nats.go's pending buffer), so a burst, such as every user of
// an edge logging out at once, is served late rather than refused.
func (r *Registry) enqueue(fn func(micro.Request)) micro.HandlerFunc {
	return func(req micro.Request) {
		r.qmu.Lock()
		if r.closed {
			r.qmu.Unlock()
			_ = req.Error(wire.CodeUnavailable, "registry stopping, retry", nil)
			return
		}
		r.inside++
		r.qmu.Unlock()
		r.work <- job{req: detached{Request: req, nc: r.nc}, fn: fn}
		r.qmu.Lock()
		if r.inside--; r.inside == 0 {
			r.qcond.Broadcast()
		}
		r.qmu.Unlock()
	}
}

// detached is a micro request answered by a worker after its micro
// handler returned: it publishes the reply itself, because micro's own
// Respond and Error record their outcome in the request for the
// endpoint's statistics, which micro reads as soon as the handler returns
// (a data race with a worker still answering). The endpoints' error counts
// in `nats micro stats` stay zero for that reason; the registry's metrics
// count every outcome.
type detached struct {
	micro.Request
	nc *nats.Conn
}

func (d detached) Respond(data []byte, opts ...micro.RespondOpt) error {
	m := &nats.Msg{Subject: d.Reply(), Data: data}
	for _, opt := range opts {
		opt(m)
	}
	if m.Subject == "" {
		return nats.ErrMsgNoReply
	}
	return d.nc.PublishMsg(m)
}

func (d detached) RespondJSON(v any, opts ...micro.RespondOpt) error {
	b, err := json.Marshal(v)
	if err != nil {
		return micro.ErrMarshalResponse
	}
	return d.Respond(b, opts...)
}

func (d detached) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if code == "" || description == "" {
		return micro.ErrArgRequired
	}
	return d.Respond(data, append([]micro.RespondOpt{func(m *nats.Msg) {
		m.Header = nats.Header{micro.ErrorHeader: {description}, micro.ErrorCodeHeader: {code}}
	}}, opts...)...)
}

// worker serves requests until work is closed and empty.
func (r *Registry) worker() {
	defer r.workers.Done()
	for j := range r.work {
		j.fn(j.req)
	}
}

// goBG runs fn as a background goroutine that Stop waits for; after Stop
// began it does nothing.
func (r *Registry) goBG(fn func()) {
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.bgDone {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
}

// reqCtx is the context of one request's KV operations: a request accepted
// is served to the end, also during Stop.
func (r *Registry) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.cfg.Timeout)
}

// bgCtx is the context of one KV operation of background work, which Stop
// cancels.
func (r *Registry) bgCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.bg, r.cfg.Timeout)
}
