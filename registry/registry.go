// Package registry is the only writer of who is online. It is a NATS micro
// service ("registry", endpoints registry.login and registry.logout, queue
// group "registry") that keeps one entry per logged-in name in the JetStream
// KV bucket "users". A login is a KV Create, so when two edges race for a name
// exactly one wins, whatever the number of registry instances; a logout
// deletes the entry only if it still belongs to the session that asks.
package registry

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
)

// Version is the micro service version.
const Version = "0.1.0"

// Defaults for Config fields left zero.
const (
	DefaultReplicas  = 1
	DefaultWorkers   = 64
	DefaultTimeout   = 5 * time.Second
	DefaultMarkerTTL = time.Minute
)

// Config of a Registry. Zero values select the defaults beside them.
type Config struct {
	// NC is the NATS connection. Required.
	NC *nats.Conn
	// Replicas of the KV buckets when this registry creates them.
	// Zero: DefaultReplicas (1, for a single server); use 3 in a cluster.
	Replicas int
	// Placement is the NATS cluster that every bucket (and stream) this
	// registry creates is placed in: the home cluster of a super-cluster
	// (deploy/README.md, "Regions"). Empty: no placement, JetStream picks.
	Placement string
	// Workers is how many requests are served at once. Micro handlers run
	// one at a time per endpoint, so they hand requests to this many
	// workers. Zero: DefaultWorkers.
	Workers int
	// Timeout bounds each KV operation. Zero: DefaultTimeout.
	Timeout time.Duration
	// MarkerTTL is how long a released name's delete marker stays in the
	// bucket (watchers see the release; then it is gone, so the bucket does
	// not grow with every name ever used). Zero: DefaultMarkerTTL.
	MarkerTTL time.Duration
	// Lease is how long an edge may go without a heartbeat before the
	// registry releases its names. Zero: DefaultLease.
	Lease time.Duration
	// Sweep is how often lapsed leases are looked for. Zero: DefaultSweep.
	Sweep time.Duration
	// Logger; zero: slog.Default().
	Logger *slog.Logger
}

// placement is Placement as JetStream takes it; nil when empty.
func (cfg Config) placement() *jetstream.Placement {
	if cfg.Placement == "" {
		return nil
	}
	return &jetstream.Placement{Cluster: cfg.Placement}
}

// Registry serves registry.login and registry.logout.
type Registry struct {
	cfg   Config
	log   *slog.Logger
	users jetstream.KeyValue
	svc   micro.Service
	work  chan job
	wg    sync.WaitGroup

	stop       chan struct{} // closed by Stop
	stopOnce   sync.Once
	stopLeases context.CancelFunc
	metrics    *registryMetrics
}

type job struct {
	req    micro.Request
	logout bool
}

// New creates (or updates) the KV buckets and starts the micro service.
// Call Stop when done.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	if cfg.NC == nil {
		return nil, errors.New("registry: no NATS connection")
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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{cfg: cfg, log: log.With("svc", "registry"), work: make(chan job, 4*cfg.Workers), stop: make(chan struct{}), metrics: newMetrics()}

	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.users, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         subject.UsersBucket,
		Description:    "who is online: name token -> edge, session",
		History:        1,
		Replicas:       cfg.Replicas,
		Placement:      cfg.placement(),
		LimitMarkerTTL: cfg.MarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: bucket %s: %w", subject.UsersBucket, err)
	}

	if err := r.startLeases(ctx, js); err != nil {
		return nil, fmt.Errorf("registry: leases: %w", err)
	}
	for range cfg.Workers {
		r.wg.Add(1)
		go r.worker()
	}
	r.svc, err = micro.AddService(cfg.NC, micro.Config{
		Name:        "registry",
		Version:     Version,
		Description: "unique usernames across the signaling cluster",
		QueueGroup:  subject.RegistryGroup,
	})
	if err != nil {
		r.stopWorkers()
		return nil, fmt.Errorf("registry: %w", err)
	}
	g := r.svc.AddGroup(subject.RegistryGroup, micro.WithGroupQueueGroup(subject.RegistryGroup))
	err = errors.Join(
		g.AddEndpoint("login", r.enqueue(false)),
		g.AddEndpoint("logout", r.enqueue(true)),
	)
	if err != nil {
		r.Stop()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.log.Info("registry started", "id", r.svc.Info().ID, "replicas", cfg.Replicas, "placement", cfg.Placement)
	return r, nil
}

// Stop stops the micro service (no new requests), then lets the workers
// finish the requests they hold. Requests that still reach a handler (the
// service's subscriptions drain asynchronously) are answered with 503, so
// that their edges retry with another registry.
func (r *Registry) Stop() error {
	err := r.svc.Stop()
	r.stopWorkers()
	return err
}

func (r *Registry) stopWorkers() {
	r.stopOnce.Do(func() { close(r.stop) })
	if r.stopLeases != nil {
		r.stopLeases()
	}
	r.wg.Wait()
}

// enqueue returns the micro handler that hands a request to the workers.
// When they are all busy it waits: requests then queue in the endpoint's
// subscription (nats.go's pending buffer), so a burst, such as every user of
// an edge logging out at once, is served late rather than refused.
func (r *Registry) enqueue(logout bool) micro.HandlerFunc {
	return func(req micro.Request) {
		select {
		case r.work <- job{req: req, logout: logout}:
		case <-r.stop:
			_ = req.Error("503", "registry stopping, retry", nil)
		}
	}
}

// worker serves requests until Stop, then finishes those already queued.
func (r *Registry) worker() {
	defer r.wg.Done()
	for {
		select {
		case j := <-r.work:
			r.serve(j)
		case <-r.stop:
			for {
				select {
				case j := <-r.work:
					r.serve(j)
				default:
					return
				}
			}
		}
	}
}

func (r *Registry) serve(j job) {
	if j.logout {
		r.handleLogout(j.req)
	} else {
		r.handleLogin(j.req)
	}
}

func (r *Registry) handleLogin(req micro.Request) {
	var in LoginRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error("400", "malformed login request: "+err.Error(), nil)
		return
	}
	if err := names.Check(in.Name); err != nil {
		_ = req.Error("400", err.Error(), nil)
		return
	}
	if in.Edge == "" || in.Session == "" {
		_ = req.Error("400", "login request without edge or session", nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	out, err := r.Login(ctx, in)
	switch {
	case err != nil:
		r.metrics.logins.WithLabelValues("error").Inc()
	case out.Resumed:
		r.metrics.logins.WithLabelValues("resumed").Inc()
	case out.OK:
		r.metrics.logins.WithLabelValues("accepted").Inc()
	case out.Reason == ReasonBadToken:
		r.metrics.logins.WithLabelValues("bad_token").Inc()
	default:
		r.metrics.logins.WithLabelValues("taken").Inc()
	}
	if err != nil {
		r.log.Error("login failed", "err", err)
		_ = req.Error("500", err.Error(), nil)
		return
	}
	_ = req.RespondJSON(out)
}

// Login creates the entry of in.Name; it is what registry.login does.
// A name that is taken yields OK false, Reason ReasonTaken and no error,
// unless in.Resume is the resume token of the session holding it: then the
// entry passes to the new session (guarded by its revision) and the edge of
// the old one is told to close it, without leave to its peer.
func (r *Registry) Login(ctx context.Context, in LoginRequest) (LoginReply, error) {
	tok := names.Token(in.Name)
	entry := Entry{
		Name:       in.Name,
		Edge:       in.Edge,
		Instance:   in.Instance,
		Session:    in.Session,
		Since:      time.Now().UTC(),
		ResumeHash: in.ResumeHash,
	}
	val, err := json.Marshal(entry)
	if err != nil {
		return LoginReply{}, err
	}
	rev, err := r.users.Create(ctx, tok, val)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		if in.Resume == "" {
			return LoginReply{OK: false, Reason: ReasonTaken, Token: tok}, nil
		}
		return r.resume(ctx, tok, in.Resume, val)
	case err != nil:
		return LoginReply{}, fmt.Errorf("create %s: %w", tok, err)
	}
	return LoginReply{OK: true, Token: tok, Revision: rev}, nil
}

// resume hands the entry of tok to a new session if token is the resume
// token of the session holding it.
func (r *Registry) resume(ctx context.Context, tok, token string, val []byte) (LoginReply, error) {
	e, err := r.users.Get(ctx, tok)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return LoginReply{OK: false, Reason: ReasonTaken, Token: tok}, nil // released meanwhile: the client retries
	case err != nil:
		return LoginReply{}, fmt.Errorf("get %s: %w", tok, err)
	}
	var cur Entry
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		return LoginReply{}, fmt.Errorf("entry %s: %w", tok, err)
	}
	if cur.ResumeHash == "" || !equalHash(cur.ResumeHash, HashToken(token)) {
		return LoginReply{OK: false, Reason: ReasonBadToken, Token: tok}, nil
	}
	rev, err := r.users.Update(ctx, tok, val, e.Revision())
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return LoginReply{OK: false, Reason: ReasonTaken, Token: tok}, nil
	}
	if err != nil {
		return LoginReply{}, fmt.Errorf("update %s: %w", tok, err)
	}
	r.announceOffline(tok, Offline{Name: cur.Name, Edge: cur.Edge, Instance: cur.Instance, Session: cur.Session, Reason: ReasonResumed})
	return LoginReply{OK: true, Token: tok, Revision: rev, Resumed: true}, nil
}

// HashToken is how resume tokens are stored: hex SHA-256.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func equalHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (r *Registry) handleLogout(req micro.Request) {
	var in LogoutRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error("400", "malformed logout request: "+err.Error(), nil)
		return
	}
	if err := names.Check(in.Name); err != nil {
		_ = req.Error("400", err.Error(), nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	out, err := r.Logout(ctx, in)
	switch {
	case err != nil:
		r.metrics.logouts.WithLabelValues("error").Inc()
	case out.OK:
		r.metrics.logouts.WithLabelValues("released").Inc()
	case out.Reason == ReasonNotOwner:
		r.metrics.logouts.WithLabelValues("not_owner").Inc()
	default:
		r.metrics.logouts.WithLabelValues("not_found").Inc()
	}
	if err != nil {
		r.log.Error("logout failed", "err", err)
		_ = req.Error("500", err.Error(), nil)
		return
	}
	_ = req.RespondJSON(out)
}

// Logout removes the entry of in.Name if in.Session still owns it (or, when
// in.Revision is set, if the entry is still that revision); it is what
// registry.logout does. The delete is guarded by the entry's revision, so
// it never removes an entry that a newer login created meanwhile.
func (r *Registry) Logout(ctx context.Context, in LogoutRequest) (LogoutReply, error) {
	tok := names.Token(in.Name)
	if in.Revision != 0 {
		// The revision the login created identifies the session's entry:
		// one guarded delete, no read first. A resume or a newer login has
		// a newer revision, so the delete cannot touch it.
		err := r.release(ctx, tok, in.Revision)
		switch {
		case err == nil:
			return LogoutReply{OK: true}, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return LogoutReply{OK: false, Reason: ReasonNotOwner}, nil
		default:
			return LogoutReply{}, err
		}
	}
	e, err := r.users.Get(ctx, tok)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return LogoutReply{OK: false, Reason: ReasonNotFound}, nil
	case err != nil:
		return LogoutReply{}, fmt.Errorf("get %s: %w", tok, err)
	}
	var cur Entry
	if err := json.Unmarshal(e.Value(), &cur); err != nil {
		return LogoutReply{}, fmt.Errorf("entry %s: %w", tok, err)
	}
	if cur.Session != in.Session {
		return LogoutReply{OK: false, Reason: ReasonNotOwner}, nil
	}
	if err := r.release(ctx, tok, e.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return LogoutReply{OK: false, Reason: ReasonNotOwner}, nil
		}
		return LogoutReply{}, err
	}
	return LogoutReply{OK: true}, nil
}

// release removes tok if its latest revision is still rev.
func (r *Registry) release(ctx context.Context, tok string, rev uint64) error {
	err := r.users.Purge(ctx, tok, jetstream.LastRevision(rev), jetstream.PurgeTTL(r.cfg.MarkerTTL))
	if err != nil {
		return fmt.Errorf("release %s@%d: %w", tok, rev, err)
	}
	return nil
}
