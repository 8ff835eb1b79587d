package registry

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/wire"
)

// view is the registry's in-memory picture of the three buckets, kept by
// watching them: who holds each name (for the lease sweep, the disconnect
// events, kicks and registry.users), which edge instances are alive (their
// heartbeats), and who is in each room (for joins, which must count the
// members, and for parting a session's rooms when it ends). Every registry
// instance keeps its own; it may lag the buckets by a moment, so whatever
// it decides is written with a guard (a revision, or a room's last
// sequence) that the server checks.
type view struct {
	r *Registry

	mu       sync.RWMutex
	users    map[string]holder    // name token -> holder
	insts    map[string]*instance // edge instance id -> its users' count
	seen     map[string]time.Time // edge instance -> last heartbeat (local clock)
	revs     map[string]uint64    // edge instance -> revision of its last heartbeat seen
	rooms    map[string]*roomView // room token -> members
	memberOf map[string]map[string]struct{}
	roomSeq  uint64     // highest revision the rooms watch delivered
	roomCond *sync.Cond // signalled when roomSeq grows

	busyMu sync.Mutex
	busy   map[string]bool // tokens being released

	online bool // NATS was connected at the last sweep (sweep goroutine only)
	now    func() time.Time
}

// holder is a name's owner as the users bucket says: about 40 bytes plus
// the session id per user, since the registry keeps one for every user
// online in the whole system. The name itself is the token's decoding, and
// the edge and instance are shared by all the users of an edge instance.
type holder struct {
	session string
	inst    *instance
	rev     uint64
	since   int64 // unix nanoseconds
}

// instance is an edge instance that holds names.
type instance struct {
	id, edge string
	users    int
}

// roomView is one room's members.
type roomView struct {
	name    string
	members map[string]wire.Member // member token -> member
	revs    map[string]uint64      // member token -> its entry's revision
	last    uint64                 // highest revision of the room's keys seen, markers included
}

// presence is what presence.offline says about tok's release from h.
func (h holder) presence(tok, reason string) wire.Presence {
	name, _ := names.Decode(tok)
	return wire.Presence{Name: name, Edge: h.inst.edge, Instance: h.inst.id, Session: h.session, Reason: reason}
}

func startView(r *Registry) (*view, error) {
	v := &view{
		r:        r,
		users:    make(map[string]holder),
		insts:    make(map[string]*instance),
		seen:     make(map[string]time.Time),
		revs:     make(map[string]uint64),
		rooms:    make(map[string]*roomView),
		memberOf: make(map[string]map[string]struct{}),
		busy:     make(map[string]bool),
		now:      time.Now,
	}
	v.roomCond = sync.NewCond(&v.mu)
	uw, err := r.users.WatchAll(r.bg)
	if err != nil {
		return nil, err
	}
	ew, err := r.edges.WatchAll(r.bg)
	if err != nil {
		_ = uw.Stop()
		return nil, err
	}
	rw, err := r.rooms.WatchAll(r.bg)
	if err != nil {
		_ = uw.Stop()
		_ = ew.Stop()
		return nil, err
	}
	r.goBG(func() {
		defer func() { _ = uw.Stop(); _ = ew.Stop(); _ = rw.Stop() }()
		v.run(r.bg, uw.Updates(), ew.Updates(), rw.Updates())
	})
	return v, nil
}

func (v *view) run(ctx context.Context, users, edges, rooms <-chan jetstream.KeyValueEntry) {
	t := time.NewTicker(v.r.cfg.Sweep)
	defer t.Stop()
	defer func() {
		// Wake joins waiting for the view: it will not catch up any more.
		v.mu.Lock()
		v.roomSeq = ^uint64(0)
		v.roomCond.Broadcast()
		v.mu.Unlock()
	}()
	v.online = v.r.nc.IsConnected()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-users:
			if !ok {
				return
			}
			if e != nil {
				v.user(e)
			}
		case e, ok := <-edges:
			if !ok {
				return
			}
			if e != nil {
				v.edge(e)
			}
		case e, ok := <-rooms:
			if !ok {
				return
			}
			if e != nil {
				v.room(e)
			}
		case <-t.C:
			v.sweep()
		}
	}
}

func (v *view) user(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	defer func() { v.r.metrics.users.Store(int64(len(v.users))) }()
	tok := e.Key()
	if old, ok := v.users[tok]; ok {
		delete(v.users, tok)
		if old.inst.users--; old.inst.users == 0 {
			delete(v.insts, old.inst.id)
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var ent wire.Entry
	if json.Unmarshal(e.Value(), &ent) != nil {
		return
	}
	in := v.insts[ent.Instance]
	if in == nil {
		in = &instance{id: ent.Instance, edge: ent.Edge}
		v.insts[ent.Instance] = in
	}
	in.users++
	v.users[tok] = holder{session: ent.Session, inst: in, rev: e.Revision(), since: ent.Since.UnixNano()}
	if _, ok := v.seen[ent.Instance]; !ok {
		// First sight of this instance: it gets a whole lease to show up.
		v.seen[ent.Instance] = v.now()
	}
}

func (v *view) edge(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var lease wire.EdgeLease
	if json.Unmarshal(e.Value(), &lease) != nil || lease.Instance == "" {
		return
	}
	v.mu.Lock()
	v.seen[lease.Instance] = v.now()
	v.revs[lease.Instance] = e.Revision()
	v.mu.Unlock()
}

func (v *view) room(e jetstream.KeyValueEntry) {
	rt, mt, ok := strings.Cut(e.Key(), ".")
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Revision() > v.roomSeq {
		v.roomSeq = e.Revision()
		v.roomCond.Broadcast()
	}
	if !ok {
		return
	}
	rv := v.rooms[rt]
	if e.Operation() != jetstream.KeyValuePut {
		if rv != nil {
			rv.last = e.Revision()
			delete(rv.members, mt)
			delete(rv.revs, mt)
			if len(rv.members) == 0 {
				delete(v.rooms, rt)
			}
		}
		if set := v.memberOf[mt]; set != nil {
			delete(set, rt)
			if len(set) == 0 {
				delete(v.memberOf, mt)
			}
		}
		return
	}
	var m wire.Member
	if json.Unmarshal(e.Value(), &m) != nil {
		return
	}
	if rv == nil {
		rv = &roomView{name: m.Room, members: make(map[string]wire.Member), revs: make(map[string]uint64)}
		v.rooms[rt] = rv
	}
	rv.members[mt] = m
	rv.revs[mt] = e.Revision()
	rv.last = e.Revision()
	set := v.memberOf[mt]
	if set == nil {
		set = make(map[string]struct{}, 1)
		v.memberOf[mt] = set
	}
	set[rt] = struct{}{}
}

// roomsOf returns the names of the rooms tok is a member of.
func (v *view) roomsOf(tok string) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for rt := range v.memberOf[tok] {
		if rv := v.rooms[rt]; rv != nil {
			out = append(out, rv.name)
		}
	}
	return out
}

// waitRooms waits until the rooms watch has delivered revision seq, or ctx
// ends.
func (v *view) waitRooms(ctx context.Context, seq uint64) {
	stop := context.AfterFunc(ctx, func() {
		v.mu.Lock()
		v.roomCond.Broadcast()
		v.mu.Unlock()
	})
	defer stop()
	v.mu.Lock()
	for v.roomSeq < seq && ctx.Err() == nil {
		v.roomCond.Wait()
	}
	v.mu.Unlock()
}

// holderOf returns the holder of tok, if the view has one.
func (v *view) holderOf(tok string) (holder, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.users[tok]
	return h, ok
}

// namesOf returns the tokens and holders of every name that instance holds.
func (v *view) namesOf(instance string) map[string]holder {
	v.mu.RLock()
	defer v.mu.RUnlock()
	in := v.insts[instance]
	if in == nil {
		return nil
	}
	out := make(map[string]holder, in.users)
	for tok, h := range v.users {
		if h.inst == in {
			out[tok] = h
		}
	}
	return out
}
