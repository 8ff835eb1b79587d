package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
)

// Lease defaults.
const (
	// DefaultLease is how long an edge may go without a heartbeat before
	// the registry releases every name it holds. Edges heartbeat every
	// DefaultHeartbeat (edge package), a quarter of it.
	DefaultLease = 10 * time.Second
	// DefaultSweep is how often the registry looks for lapsed leases.
	DefaultSweep = time.Second
)

// EdgeLease is the value an edge heartbeats into the edges bucket under its
// id.
type EdgeLease struct {
	ID       string    `json:"id"`
	Instance string    `json:"instance"`
	Listen   string    `json:"listen,omitempty"`
	At       time.Time `json:"at"`
}

// Offline is the payload of presence.offline.<token>.
type Offline struct {
	Name     string `json:"name"`
	Edge     string `json:"edge"`
	Instance string `json:"instance"`
	Session  string `json:"session"`
	Reason   string `json:"reason"`
}

// Reasons in Offline.
const (
	// ReasonLease: the edge holding the name stopped heartbeating; its
	// peers get leave.
	ReasonLease = "edge lease expired"
	// ReasonResumed: the client resumed its session elsewhere; the old
	// connection is closed and nobody gets leave.
	ReasonResumed = "resumed"
)

// holder is a name's owner as the users bucket says: 32 bytes plus the
// session id per user, since the registry keeps one for every user online
// in the whole system. The name itself is the token's decoding, and the edge
// and instance are shared by all the users of an edge instance.
type holder struct {
	session string
	inst    *instance
	rev     uint64
}

// instance is an edge instance that holds names.
type instance struct {
	id, edge string
	users    int
}

// offline is what presence.offline says about tok's release from h.
func (h holder) offline(tok, reason string) Offline {
	name, _ := names.Decode(tok)
	return Offline{Name: name, Edge: h.inst.edge, Instance: h.inst.id, Session: h.session, Reason: reason}
}

// leases watches the users and edges buckets and releases the names of
// edge instances whose lease lapsed. Every registry runs one; they never
// fight, because a release is a delete guarded by the entry's revision: the
// first wins, the others find the revision gone.
type leases struct {
	r      *Registry
	edges  jetstream.KeyValue
	users  map[string]holder    // token -> holder
	insts  map[string]*instance // instance id -> its users' count
	seen   map[string]time.Time // edge instance -> last heartbeat (local clock)
	revs   map[string]uint64    // edge instance -> revision of its last heartbeat seen
	busy   map[string]bool      // tokens being released
	mu     sync.Mutex           // guards busy
	online bool
	now    func() time.Time
}

func (r *Registry) startLeases(ctx context.Context, js jetstream.JetStream) error {
	edges, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      subject.EdgesBucket,
		Description: "edge leases: edge id -> instance, refreshed by heartbeats",
		History:     1,
		TTL:         3 * r.cfg.Lease,
		Replicas:    r.cfg.Replicas,
		Placement:   r.cfg.placement(),
	})
	if err != nil {
		return err
	}
	l := &leases{
		r:     r,
		edges: edges,
		users: make(map[string]holder),
		insts: make(map[string]*instance),
		seen:  make(map[string]time.Time),
		revs:  make(map[string]uint64),
		busy:  make(map[string]bool),
		now:   time.Now,
	}
	wctx, cancel := context.WithCancel(context.Background())
	uw, err := r.users.WatchAll(wctx)
	if err != nil {
		cancel()
		return err
	}
	ew, err := edges.WatchAll(wctx)
	if err != nil {
		cancel()
		return err
	}
	r.stopLeases = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { _ = uw.Stop(); _ = ew.Stop() }()
		l.run(wctx, uw.Updates(), ew.Updates())
	}()
	return nil
}

func (l *leases) run(ctx context.Context, users, edges <-chan jetstream.KeyValueEntry) {
	t := time.NewTicker(l.r.cfg.Sweep)
	defer t.Stop()
	l.online = l.r.cfg.NC.IsConnected()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-users:
			if !ok {
				return
			}
			if e != nil {
				l.user(e)
			}
		case e, ok := <-edges:
			if !ok {
				return
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				var lease EdgeLease
				if json.Unmarshal(e.Value(), &lease) == nil && lease.Instance != "" {
					l.seen[lease.Instance] = l.now()
					l.revs[lease.Instance] = e.Revision()
				}
			}
		case <-t.C:
			l.sweep()
		}
	}
}

func (l *leases) user(e jetstream.KeyValueEntry) {
	defer func() { l.r.metrics.users.Store(int64(len(l.users))) }()
	tok := e.Key()
	if old, ok := l.users[tok]; ok {
		delete(l.users, tok)
		if old.inst.users--; old.inst.users == 0 {
			delete(l.insts, old.inst.id)
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var v Entry
	if json.Unmarshal(e.Value(), &v) != nil {
		return
	}
	in := l.insts[v.Instance]
	if in == nil {
		in = &instance{id: v.Instance, edge: v.Edge}
		l.insts[v.Instance] = in
	}
	in.users++
	l.users[tok] = holder{session: v.Session, inst: in, rev: e.Revision()}
	if _, ok := l.seen[v.Instance]; !ok {
		// First sight of this instance: it gets a whole lease to show up.
		l.seen[v.Instance] = l.now()
	}
}

// sweep releases the names of lapsed instances. While this registry is cut
// off from NATS it sees no heartbeats, so it releases nothing; once back, it
// gives every instance a whole lease again.
func (l *leases) sweep() {
	now := l.now()
	if !l.r.cfg.NC.IsConnected() {
		l.online = false
		return
	}
	if !l.online {
		l.online = true
		for k := range l.seen {
			l.seen[k] = now
		}
		return
	}
	// The sweep looks at instances, not users: a round costs the same
	// with a hundred users as with a hundred thousand.
	var late []*instance
	for id, in := range l.insts {
		last, ok := l.seen[id]
		if !ok {
			l.seen[id] = now
			continue
		}
		if now.Sub(last) > l.r.cfg.Lease {
			late = append(late, in)
		}
	}
	for id, last := range l.seen {
		if l.insts[id] == nil && now.Sub(last) > 3*l.r.cfg.Lease {
			delete(l.seen, id)
			delete(l.revs, id)
		}
	}
	if len(late) == 0 {
		return
	}
	// The watch may have stalled (a NATS node went away under it), which
	// looks like every edge going silent at once: confirm each lapsed lease
	// with a fresh read of the edges bucket before releasing anything.
	lapsed := map[*instance]bool{}
	for _, in := range late {
		if l.lapsed(in.edge, in.id, now) {
			lapsed[in] = true
		}
	}
	if len(lapsed) == 0 {
		return
	}
	var expired []struct {
		tok string
		h   holder
	}
	for tok, h := range l.users {
		if lapsed[h.inst] {
			expired = append(expired, struct {
				tok string
				h   holder
			}{tok, h})
		}
	}
	l.r.log.Info("edge lease lapsed; releasing its names", "names", len(expired), "edge", expired[0].h.inst.edge)
	sem := make(chan struct{}, 16)
	for _, x := range expired {
		l.mu.Lock()
		if l.busy[x.tok] {
			l.mu.Unlock()
			continue
		}
		l.busy[x.tok] = true
		l.mu.Unlock()
		sem <- struct{}{}
		l.r.wg.Add(1)
		go func() {
			defer l.r.wg.Done()
			defer func() { <-sem }()
			l.release(x.tok, x.h)
			l.mu.Lock()
			delete(l.busy, x.tok)
			l.mu.Unlock()
		}()
	}
}

// release removes tok if it still holds h and tells the edges, so that its
// peers get leave.
func (l *leases) release(tok string, h holder) {
	ctx, cancel := context.WithTimeout(context.Background(), l.r.cfg.Timeout)
	defer cancel()
	err := l.r.release(ctx, tok, h.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return // someone else released it, or it has a new owner
	}
	if err != nil {
		l.r.log.Warn("lease release failed; will retry", "err", err)
		return
	}
	l.r.metrics.releases.Inc()
	l.r.announceOffline(tok, h.offline(tok, ReasonLease))
}

// announceOffline publishes presence.offline.<tok>.
func (r *Registry) announceOffline(tok string, o Offline) {
	b, _ := json.Marshal(o)
	_ = r.cfg.NC.Publish(subject.PresenceOffline(tok), b)
}

// lapsed reads the lease of edge from the bucket: it has lapsed if the key
// is gone or holds another instance or no newer heartbeat than the last one
// seen. When the bucket cannot be read, nothing is released this round.
func (l *leases) lapsed(edge, instance string, now time.Time) bool {
	ctx, cancel := context.WithTimeout(context.Background(), l.r.cfg.Timeout)
	defer cancel()
	e, err := l.edges.Get(ctx, edge)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return true
	case err != nil:
		l.r.log.Warn("cannot read the edges bucket; releasing nothing", "err", err)
		return false
	}
	var lease EdgeLease
	if json.Unmarshal(e.Value(), &lease) != nil || lease.Instance != instance {
		return true
	}
	if e.Revision() != l.revs[instance] {
		l.seen[instance] = now // a heartbeat the watch did not deliver
		l.revs[instance] = e.Revision()
		return false
	}
	return true
}
