package edge

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
)

// A session is a logged-in name on this edge: its subscription of
// "user.<token>", its peers, rooms and watches. It lives longer than its
// connection when it is resumable and the connection drops: then it is
// held, and frames for it are kept until its client resumes it (here or on
// another edge, which asks for them: resume.go) or the grace ends.
//
//	pending  --login ok-->  live  --drop (resumable)-->  held  --grace-->  expiring --> ended
//	   |                     |  \--close, or not resumable------------------------------> ended
//	   \--login refused--> ended  \--resumed elsewhere--> handing --> ended
//	moving (a resume here, waiting for the old edge's frames) --> live
//
// In pending and moving, frames for the session wait in its queue and are
// delivered once it is live; in held and handing they are kept within the
// ResumeFrames and ResumeBytes bounds; after that they are refused (the
// sender hears that the user is not online).
type session struct {
	e         *Edge
	name      string
	token     string
	id        string
	resumable bool
	sub       *nats.Subscription
	disp      chan *nats.Msg // the dispatcher of its subscription
	rev       uint64         // the registry entry's revision; set before the session is live
	seq       atomic.Uint64  // frames it sent, for HeaderSeq

	mu      sync.Mutex
	state   sessState
	conn    *conn         // nil unless live
	queue   []keptFrame   // see the type's doc
	qbytes  int           // bytes in queue
	timer   *time.Timer   // the resume grace of a held session
	settled chan struct{} // closed when an expiring session's logout is answered
	peers   map[string]struct{}
	rooms   map[string]string // room token -> room name
	watches map[string]*watchState
	seen    map[string]uint64    // moving: the highest seq per sender in the hand-over
	tracks  map[string]*trackPos // per sender session: the last HeaderTrack seen (lost frames)
	late    []keptFrame          // frames its connection did not take after it ended
	sent    *sentRing            // held: what its last connection was sent (recovered on resume)
}

type sessState uint8

const (
	sesPending sessState = iota
	sesLive
	sesHeld
	sesExpiring
	sesHanding
	sesMoving
	sesEnded
)

// keptFrame is a frame waiting in a session's queue.
type keptFrame struct {
	data  []byte
	seq   string   // HeaderSeq: "<sender session>:<n>"
	from  string   // HeaderFrom
	edge  string   // HeaderEdge: the sender's edge, told of a refusal
	reply string   // the frame's reply subject, which a refusal names
	track trackPos // HeaderTrack; zero: none
}

// trackPos is a frame's place on its sender's route (HeaderTrack).
type trackPos struct{ route, m uint64 }

// parseTrack parses a HeaderTrack value, "<route>:<m>".
func parseTrack[T string | []byte](v T) (trackPos, bool) {
	var p trackPos
	i := 0
	for ; i < len(v) && v[i] != ':'; i++ {
		if v[i] < '0' || v[i] > '9' || i >= 19 {
			return trackPos{}, false
		}
		p.route = p.route*10 + uint64(v[i]-'0')
	}
	if i == 0 || i >= len(v)-1 || len(v)-i-1 > 19 {
		return trackPos{}, false
	}
	for j := i + 1; j < len(v); j++ {
		if v[j] < '0' || v[j] > '9' {
			return trackPos{}, false
		}
		p.m = p.m*10 + uint64(v[j]-'0')
	}
	if p.m == 0 {
		return trackPos{}, false
	}
	return p, true
}

// maxTracks bounds the senders whose routes a session follows; past it
// they are forgotten and followed again from their next frame.
const maxTracks = 64

// tracked notes f's place on its sender's route and returns how many frames
// of that route, before f, never arrived: m jumped. A route that is new
// (the sender's connection began it after the one seen) starts again; an
// older frame (handed over, or reordered) changes nothing. s.mu is held.
func (s *session) tracked(f *keptFrame) uint64 {
	if f.track.m == 0 {
		return 0
	}
	sender, _, ok := splitSeq(f.seq)
	if !ok {
		return 0
	}
	p := s.tracks[sender]
	if p == nil {
		if s.tracks == nil {
			s.tracks = make(map[string]*trackPos)
		} else if len(s.tracks) >= maxTracks {
			clear(s.tracks)
		}
		// A copy of the key: f's strings may point into the frame's bytes.
		t := f.track
		s.tracks[strings.Clone(sender)] = &t
		return 0
	}
	switch {
	case f.track.route == p.route && f.track.m > p.m:
		lost := f.track.m - p.m - 1
		p.m = f.track.m
		return lost
	case f.track.route > p.route:
		*p = f.track
	}
	return 0
}

func newSession(e *Edge, name, token, id string, resumable bool) *session {
	return &session{e: e, name: name, token: token, id: id, resumable: resumable}
}

// nameBytes is the session's name as bytes for the appenders, without a
// copy (they only read it).
func (s *session) nameBytes() []byte { return unsafe.Slice(unsafe.StringData(s.name), len(s.name)) }

// frameOf returns what a NATS message carries for a session's queue.
func frameOf(m *nats.Msg) keptFrame {
	f := keptFrame{data: m.Data, reply: m.Reply}
	if v := m.Header[subject.HeaderSeq]; len(v) > 0 {
		f.seq = v[0]
	}
	if v := m.Header[subject.HeaderFrom]; len(v) > 0 {
		f.from = v[0]
	}
	if v := m.Header[subject.HeaderEdge]; len(v) > 0 {
		f.edge = v[0]
	}
	if v := m.Header[subject.HeaderTrack]; len(v) > 0 {
		f.track, _ = parseTrack(v[0])
	}
	return f
}

// deliver hands a frame for the session to its socket, or keeps, queues
// or refuses it, as the session's state says. A frame from the user's own
// subject (room false) changes the peer set when it is taken (an offer or
// answer adds its sender, leave removes it) and is refused to its sender
// when it cannot be kept; room frames are neither.
func (s *session) deliver(f keptFrame, room bool) {
	e := s.e
	ft := protocol.FrameType(f.data)
	s.mu.Lock()
	if !room && f.track.m > 0 {
		if lost := s.tracked(&f); lost > 0 {
			s.mu.Unlock()
			e.reportLost(f, lost)
			s.mu.Lock()
		}
	}
	switch s.state {
	case sesLive:
		if s.seen != nil && s.duplicate(f) {
			s.mu.Unlock()
			e.stats.duplicates.Add(1)
			return
		}
		if !room {
			s.peerEffect(ft, f.from)
		}
		if len(s.queue) > 0 || e.suspect.Load() || e.paused() {
			// The edge was paused: this session's name may be someone
			// else's now. Its frames wait until the sessions are checked
			// (released, not refused, if it lost the name: the new owner
			// got them).
			s.queue = append(s.queue, f)
			s.qbytes += len(f.data)
			s.mu.Unlock()
			return
		}
		c := s.conn
		s.mu.Unlock()
		var ok bool
		if s.resumable {
			ok = c.enqueueKept(ws.OpText, f.data, &f)
		} else {
			ok = c.enqueue(ws.OpText, f.data)
		}
		if !ok {
			s.undelivered(c, f, room)
		}
		return
	case sesPending, sesMoving:
		s.queue = append(s.queue, f)
		s.qbytes += len(f.data)
		s.mu.Unlock()
		return
	case sesHeld, sesHanding:
		if len(s.queue) < e.cfg.ResumeFrames && s.qbytes+len(f.data) <= e.cfg.ResumeBytes {
			if !room {
				s.peerEffect(ft, f.from)
			}
			s.queue = append(s.queue, f)
			s.qbytes += len(f.data)
			s.mu.Unlock()
			e.stats.kept.Add(1)
			return
		}
		s.mu.Unlock()
		e.stats.dropped[dropBound].Add(1)
	default:
		s.mu.Unlock()
		e.stats.dropped[dropEnded].Add(1)
	}
	if !room {
		e.refuse(f)
	}
}

// duplicate reports whether f reached this session through the old edge's
// hand-over already. s.mu is held.
func (s *session) duplicate(f keptFrame) bool {
	sender, n, ok := splitSeq(f.seq)
	if !ok {
		return false
	}
	if last, ok := s.seen[sender]; ok && n <= last {
		return true
	}
	return false
}

// flushPaused delivers the frames a live session kept while the edge checked
// its sessions after a pause.
func (s *session) flushPaused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != sesLive || len(s.queue) == 0 {
		return
	}
	c := s.conn
	for i, f := range s.queue {
		if s.resumable {
			c.enqueueKept(ws.OpText, f.data, &s.queue[i])
		} else {
			c.enqueue(ws.OpText, f.data)
		}
	}
	s.queue, s.qbytes = nil, 0
}

// undelivered handles a frame that c did not take: its socket has ended
// (or is closing). Until the session learns of it (connEnded), the frame
// waits in late; after, it is delivered again as the new state says.
func (s *session) undelivered(c *conn, f keptFrame, room bool) {
	s.mu.Lock()
	if s.state == sesLive && s.conn == c {
		s.late = append(s.late, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.deliver(f, room)
}

// local delivers a frame that this edge made for the session (leave,
// presence): like a frame from NATS without a sender to refuse.
func (s *session) local(data []byte) { s.deliver(keptFrame{data: data}, true) }

// connEnded ends the session of a connection that ended: held for a resume
// if it is resumable and no close frame was exchanged, else released. sent
// is what the connection was sent since its login reply (a resumable
// session on a tracked socket): a held session keeps it, so that its
// resume gets again what the client did not receive.
func (s *session) connEnded(c *conn, sent *sentRing) {
	e := s.e
	s.mu.Lock()
	if s.conn != c || s.state != sesLive {
		s.mu.Unlock() // taken over meanwhile (revoked, resumed): not ours to end
		return
	}
	s.conn = nil
	e.stats.users.Add(-1)
	late := s.late
	s.late = nil
	if s.resumable && !c.deliberate.Load() && !c.revoked.Load() && e.cfg.ResumeGrace > 0 && !e.closing.Load() {
		s.state = sesHeld
		s.seen = nil
		s.sent = sent
		var over []keptFrame
		for _, f := range late {
			if len(s.queue) < e.cfg.ResumeFrames && s.qbytes+len(f.data) <= e.cfg.ResumeBytes {
				s.queue = append(s.queue, f)
				s.qbytes += len(f.data)
			} else {
				over = append(over, f)
			}
		}
		s.timer = time.AfterFunc(e.cfg.ResumeGrace, s.expire)
		s.mu.Unlock()
		e.stats.held.Add(1)
		e.stats.kept.Add(uint64(len(late) - len(over)))
		for _, f := range over {
			e.stats.dropped[dropBound].Add(1)
			e.refuse(f)
		}
		return
	}
	s.state = sesEnded
	s.queue = append(s.queue, late...)
	s.mu.Unlock()
	if c.revoked.Load() {
		s.forget()
		return
	}
	reason := events.ReasonClose
	if !c.deliberate.Load() {
		reason = events.ReasonDrop
	}
	s.release(reason)
}

// release ends an ended session whose name is still ours: no more
// deliveries, the registry entry (its rooms go with it), then leave to its
// peers. The name goes first, so that a peer that reacts to leave by
// calling the name again finds it free.
func (s *session) release(reason string) {
	s.unsubscribe()
	owned := s.e.logout(s, reason)
	s.finish(owned, reason)
}

// finish tells the peers (when the name was ours to give up), refuses
// what is still queued and forgets the session.
func (s *session) finish(tellPeers bool, reason string) {
	e := s.e
	s.mu.Lock()
	peers := s.peers
	s.peers = nil
	// What its last connection was sent and it did not receive, as far as
	// the TCP stack tells, then what was kept.
	queue := append(s.sent.undelivered(-1), s.queue...)
	s.sent = nil
	s.queue, s.qbytes = nil, 0
	s.mu.Unlock()
	for _, f := range queue {
		e.stats.dropped[dropEnded].Add(1)
		e.refuse(f)
	}
	for p := range peers {
		e.peers.remove(p, s)
		if tellPeers {
			e.sendLeave(s, p, reason)
		}
	}
	s.forget()
}

// forget removes the session from the edge's tables and indexes.
func (s *session) forget() {
	e := s.e
	s.unsubscribe()
	e.sessions.remove(s)
	s.mu.Lock()
	peers, watches, rooms := s.peers, s.watches, s.rooms
	s.peers, s.watches, s.rooms = nil, nil, nil
	s.mu.Unlock()
	for p := range peers {
		e.peers.remove(p, s)
	}
	for tok := range watches {
		e.watchers.remove(tok, s)
	}
	for rt := range rooms {
		e.rooms.leave(rt, s)
	}
}

// unsubscribe ends the session's deliveries (idempotent).
func (s *session) unsubscribe() {
	s.e.inline.remove(s) // first: then no frame for it is being delivered inline
	if s.sub != nil {
		_ = s.sub.Unsubscribe()
	}
}

// sendLeave tells peer tok that s's call is over.
func (e *Edge) sendLeave(s *session, tok, reason string) {
	msg := nats.Msg{Subject: subject.User(tok), Header: nats.Header{
		subject.HeaderFrom: {s.token}, subject.HeaderEdge: {e.cfg.ID}, subject.HeaderSeq: {s.nextSeq()},
	}, Data: protocol.AppendLeave(nil)}
	_ = e.nc.PublishMsg(&msg)
	e.callEnd(s.name, s.token, tok, reason)
}

// nextSeq returns the HeaderSeq value of the session's next frame.
func (s *session) nextSeq() string {
	return s.id + ":" + uitoa(s.seq.Add(1))
}

func uitoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(b[i:])
}

// splitSeq parses a HeaderSeq value.
func splitSeq(v string) (sender string, n uint64, ok bool) {
	i := len(v) - 1
	for i >= 0 && v[i] != ':' {
		i--
	}
	if i <= 0 || i == len(v)-1 {
		return "", 0, false
	}
	for _, ch := range v[i+1:] {
		if ch < '0' || ch > '9' {
			return "", 0, false
		}
		n = n*10 + uint64(ch-'0')
	}
	return v[:i], n, true
}

// sessionTable holds the edge's sessions, by subscription (deliveries) and
// by session id (the registry's events, hand-overs).
type sessionTable struct {
	mu     sync.RWMutex
	bySub  map[*nats.Subscription]*session
	byID   map[string]*session
	closed bool
}

func (t *sessionTable) init() {
	t.bySub = make(map[*nats.Subscription]*session)
	t.byID = make(map[string]*session)
}

// add subscribes s through sub and records it, unless the edge is
// stopping. The subscription is made under the table's lock so that
// Shutdown, which unsubscribes every session before it closes the
// dispatchers' channels, cannot miss one.
func (t *sessionTable) add(s *session, sub func() (*nats.Subscription, error)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errStopping
	}
	s.e.inline.add(s) // before the subscription: its first frame may come that way
	ns, err := sub()
	if err != nil {
		s.e.inline.remove(s)
		return err
	}
	s.sub = ns
	t.bySub[ns] = s
	t.byID[s.id] = s
	return nil
}

func (t *sessionTable) bySubscription(sub *nats.Subscription) *session {
	t.mu.RLock()
	s := t.bySub[sub]
	t.mu.RUnlock()
	return s
}

func (t *sessionTable) find(id string) *session {
	t.mu.RLock()
	s := t.byID[id]
	t.mu.RUnlock()
	return s
}

func (t *sessionTable) remove(s *session) {
	t.mu.Lock()
	if t.bySub[s.sub] == s {
		delete(t.bySub, s.sub)
	}
	if t.byID[s.id] == s {
		delete(t.byID, s.id)
	}
	t.mu.Unlock()
}

// close closes the table to new sessions and returns every session.
func (t *sessionTable) close() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	out := make([]*session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	return out
}

// snapshot returns every session.
func (t *sessionTable) snapshot() []*session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	return out
}
