package edge

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Presence: a client watches names and gets
// {"type":"presence","name":N,"online":B} for each now and on every change,
// driven by the registry's presence.online and presence.offline events. A
// held session counts as online (the registry releases nothing while it is
// held). The registry's presence.offline also tells an edge which of its
// sessions lost a peer whose own edge cannot send leave (it died, or the
// peer was kicked), and which session of its own was kicked or released
// while this edge was cut off.

// watchState is one watched name of a session.
type watchState struct {
	name   string
	online bool // as last told to the client
	// While the first lookup is in flight (pending), an event for the name
	// is remembered here instead of being sent, so that the lookup's older
	// answer does not overtake it.
	pending     bool
	event       bool
	eventOnline bool
}

// lookupParallel bounds the users-bucket lookups of one watch.
const lookupParallel = 8

// watch handles watch (on) and unwatch (off).
func (c *conn) watch(s *session, f *protocol.Frame, on bool) {
	e := c.e
	var list []string
	if f.Payload == nil || json.Unmarshal(f.Payload, &list) != nil {
		c.sendError(reasonBadFrame, `missing "names": a list of names`)
		return
	}
	toks := make([]string, 0, len(list))
	valid := list[:0]
	for _, n := range list {
		if err := names.Check(n); err != nil {
			c.sendError(reasonBadTarget, "invalid name in "+string(f.RawType)+": "+err.Error())
			continue
		}
		valid = append(valid, n)
		toks = append(toks, names.Token(n))
	}
	if !on {
		s.mu.Lock()
		for _, tok := range toks {
			if _, ok := s.watches[tok]; ok {
				delete(s.watches, tok)
				e.watchers.remove(tok, s)
			}
		}
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	added := 0
	for _, tok := range toks {
		if _, ok := s.watches[tok]; !ok {
			added++
		}
	}
	if len(s.watches)+added > e.cfg.MaxWatch {
		s.mu.Unlock()
		e.stats.errors[reasonWatchLimit].Add(1)
		c.sendError(reasonWatchLimit, "watch limit exceeded (limit "+strconv.Itoa(e.cfg.MaxWatch)+" names per connection, -max-watch)")
		return
	}
	s.mu.Unlock()
	s.watchNames(valid, toks, nil)
}

// watchNames starts watching names (toks their tokens) and tells the client
// the state of each. told, when set, is what an earlier edge last told the
// client (a resumed session): only changes from it are sent.
func (s *session) watchNames(list, toks []string, told map[string]bool) {
	e := s.e
	s.mu.Lock()
	if s.watches == nil {
		s.watches = make(map[string]*watchState)
	}
	var lookup []int
	for i, tok := range toks {
		w := s.watches[tok]
		if w == nil {
			w = &watchState{name: list[i], pending: true}
			s.watches[tok] = w
			e.watchers.add(tok, s)
			lookup = append(lookup, i)
		} else if w.pending {
			lookup = append(lookup, i)
		}
	}
	s.mu.Unlock()
	online := make([]bool, len(toks))
	e.lookup(toks, lookup, online)
	var frames [][]byte
	s.mu.Lock()
	for i, tok := range toks {
		w := s.watches[tok]
		if w == nil {
			continue // unwatched meanwhile
		}
		if w.pending {
			w.pending = false
			w.online = online[i]
			if w.event {
				w.online = w.eventOnline
			}
		}
		if was, ok := told[w.name]; ok && was == w.online {
			continue
		}
		frames = append(frames, protocol.AppendPresence(nil, []byte(w.name), w.online))
	}
	s.mu.Unlock()
	for _, b := range frames {
		s.local(b)
	}
}

// rewatch restores the watches a resumed session had on its old edge.
func (c *conn) rewatch(s *session, told map[string]bool) {
	list := make([]string, 0, len(told))
	toks := make([]string, 0, len(told))
	for n := range told {
		if names.Check(n) == nil {
			list = append(list, n)
			toks = append(toks, names.Token(n))
		}
	}
	s.watchNames(list, toks, told)
}

// lookup sets online[i] for each i in idx: whether toks[i] is in the users
// bucket. A name it cannot look up counts as offline.
func (e *Edge) lookup(toks []string, idx []int, online []bool) {
	if len(idx) == 0 {
		return
	}
	kv := e.usersKV()
	if kv == nil {
		return
	}
	ctx, cancel := e.reqCtx()
	defer cancel()
	sem := make(chan struct{}, lookupParallel)
	var wg sync.WaitGroup
	for _, i := range idx {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := kv.Get(ctx, toks[i])
			online[i] = err == nil
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				e.log.Debug("presence lookup failed", "err", err)
			}
		}()
	}
	wg.Wait()
}

// onOnline handles presence.online.<token>.
func (e *Edge) onOnline(m *nats.Msg) {
	e.presence(strings.TrimPrefix(m.Subject, subject.PresenceOnlinePrefix), true)
}

// onOffline handles presence.offline.<token>: watchers see the name go
// offline; when the name's own edge cannot send leave (edge_lost, kicked),
// its local peers get leave here; and a session of this edge that lost its
// name to the registry is closed, so that a name never has two owners.
func (e *Edge) onOffline(m *nats.Msg) {
	tok := strings.TrimPrefix(m.Subject, subject.PresenceOfflinePrefix)
	e.presence(tok, false)
	var p wire.Presence
	if json.Unmarshal(m.Data, &p) != nil {
		return
	}
	if p.Reason != events.ReasonEdgeLost && p.Reason != events.ReasonKicked {
		return
	}
	for _, s := range e.peers.take(tok) {
		s.mu.Lock()
		_, had := s.peers[tok]
		delete(s.peers, tok)
		s.mu.Unlock()
		if had {
			s.local(protocol.AppendLeave(nil))
			e.callEnd(s.name, s.token, tok, p.Reason)
		}
	}
	if s := e.sessions.find(p.Session); s != nil && s.token == tok {
		e.lost(s, p)
	}
}

// lost ends a session of this edge whose name the registry released: a
// kick (the client gets an error frame with the reason, then 4003), or a
// lapsed lease while this edge was cut off (4001).
func (e *Edge) lost(s *session, p wire.Presence) {
	s.mu.Lock()
	c := s.conn
	switch s.state {
	case sesLive:
		s.conn = nil
		e.stats.users.Add(-1)
	case sesHeld:
		s.timer.Stop()
		e.stats.held.Add(-1)
	case sesPending, sesMoving:
		// Not ours yet: the registry's answer decides.
		s.mu.Unlock()
		return
	default:
		s.mu.Unlock()
		return
	}
	s.state = sesEnded
	if e.suspect.Load() {
		// Kept while the edge was paused: the name's new owner got them.
		s.queue, s.qbytes = nil, 0
	}
	s.mu.Unlock()
	if c != nil {
		if p.Reason == events.ReasonKicked {
			msg := "kicked"
			if p.Message != "" {
				msg += ": " + p.Message
			}
			e.stats.errors[reasonKicked].Add(1)
			c.enqueue(ws.OpText, protocol.AppendError(nil, msg))
			c.revoke(closeKicked)
		} else {
			e.log.Warn("registry released a name held here (lease lapsed); closing its connection", "conn", c.id)
			c.revoke(closeNameLost)
		}
	}
	s.unsubscribe()
	s.finish(false, p.Reason)
}

// presence tells the local watchers of tok that it is (not) online.
func (e *Edge) presence(tok string, online bool) {
	for _, s := range e.watchers.get(tok) {
		s.mu.Lock()
		w := s.watches[tok]
		if w == nil {
			s.mu.Unlock()
			continue
		}
		if w.pending {
			w.event, w.eventOnline = true, online
			s.mu.Unlock()
			continue
		}
		if w.online == online {
			s.mu.Unlock()
			continue
		}
		w.online = online
		name := w.name
		s.mu.Unlock()
		s.local(protocol.AppendPresence(nil, []byte(name), online))
	}
}

// watchIndex maps a name token to the local sessions watching it.
type watchIndex struct {
	mu  sync.Mutex
	idx map[string]map[*session]struct{}
}

func (w *watchIndex) init() { w.idx = make(map[string]map[*session]struct{}) }

func (w *watchIndex) add(tok string, s *session) {
	w.mu.Lock()
	set := w.idx[tok]
	if set == nil {
		set = make(map[*session]struct{}, 1)
		w.idx[tok] = set
	}
	set[s] = struct{}{}
	w.mu.Unlock()
}

func (w *watchIndex) remove(tok string, s *session) {
	w.mu.Lock()
	if set := w.idx[tok]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(w.idx, tok)
		}
	}
	w.mu.Unlock()
}

func (w *watchIndex) get(tok string) []*session {
	w.mu.Lock()
	defer w.mu.Unlock()
	set := w.idx[tok]
	if len(set) == 0 {
		return nil
	}
	out := make([]*session, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	return out
}
