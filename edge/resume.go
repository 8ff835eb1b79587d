package edge

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Resume that loses nothing. A resumable session whose connection dropped
// is held: its subscription stays, and frames for it are kept (within
// ResumeFrames and ResumeBytes). When its client logs in again with its
// resume token, on this edge or another, the registry moves the name to the
// new session and tells the new edge which session it was; the new edge,
// already subscribed (so that nothing published from then on is missed),
// asks the old one for what it kept ("edge.<id>.handover"). The old edge
// unsubscribes, waits until its dispatcher has delivered everything that
// arrived before (mark), and hands over the kept frames, the peers and the
// watches. The new edge delivers the handed-over frames first, in order,
// then what it received itself meanwhile without the frames that reached
// both (each frame carries its sender's sequence, HeaderSeq), then live
// traffic.
//
// The kept frames live in the old edge's memory: if that edge dies (kill
// -9) they die with it. Its names are then released as edge_lost, peers get
// leave, and a resume finds the name free: the login succeeds as a new
// session (no "resumed").

// dedupeWindow is how long a resumed session keeps recognising frames that
// the hand-over gave it already: a room frame can reach the new edge a
// moment after the old edge had it.
const dedupeWindow = 10 * time.Second

// expire ends a held session whose grace passed without a resume.
func (s *session) expire() {
	e := s.e
	s.mu.Lock()
	if s.state != sesHeld {
		s.mu.Unlock()
		return
	}
	s.state = sesExpiring
	s.settled = make(chan struct{})
	settled := s.settled
	s.mu.Unlock()
	e.stats.held.Add(-1)
	res := e.logoutOutcome(s, events.ReasonExpired)
	s.mu.Lock()
	if res == logoutNotOwner {
		// Resumed elsewhere just now: its new edge asks for what was kept.
		s.state = sesHeld
		s.timer = time.AfterFunc(e.cfg.RegistryTimeout*2, s.abandon)
		s.mu.Unlock()
		e.stats.held.Add(1)
		close(settled)
		return
	}
	s.state = sesEnded
	s.mu.Unlock()
	close(settled)
	s.unsubscribe()
	s.finish(true, events.ReasonExpired)
}

// abandon forgets a held session that was resumed elsewhere but whose new
// edge never asked for what was kept (the request was lost): the kept
// frames are refused, nobody gets leave (the call moved on).
func (s *session) abandon() {
	s.mu.Lock()
	if s.state != sesHeld {
		s.mu.Unlock()
		return
	}
	s.state = sesEnded
	s.mu.Unlock()
	s.e.stats.held.Add(-1)
	s.unsubscribe()
	s.finish(false, events.ReasonResumed)
}

// handleHandover answers a hand-over request from the edge that took one of
// this edge's sessions over.
func (e *Edge) handleHandover(req micro.Request) {
	var in wire.HandoverRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error(wire.CodeBadRequest, "malformed hand-over request", nil)
		return
	}
	_ = req.RespondJSON(e.handOver(in))
}

// handOver gives up the session in.Session: a stale connection still open
// is closed (4002), a held one stops waiting; then the frames kept for it,
// its peers and its watches go in the reply.
func (e *Edge) handOver(in wire.HandoverRequest) wire.HandoverReply {
	s := e.sessions.find(in.Session)
	if s == nil || s.token != in.Token {
		return wire.HandoverReply{OK: false, Reason: "no such session here"}
	}
	s.mu.Lock()
	for s.state == sesExpiring {
		settled := s.settled
		s.mu.Unlock()
		select {
		case <-settled:
		case <-time.After(e.cfg.RegistryTimeout):
		}
		s.mu.Lock()
	}
	var stale *conn
	switch s.state {
	case sesLive:
		stale = s.conn
		s.conn = nil
		e.stats.users.Add(-1)
		stale.wmu.Lock()
		s.sent = stale.detachTrack()
		stale.wmu.Unlock()
	case sesHeld:
		s.timer.Stop()
		e.stats.held.Add(-1)
	default:
		s.mu.Unlock()
		return wire.HandoverReply{OK: false, Reason: "session ended here"}
	}
	s.state = sesHanding
	s.mu.Unlock()
	if stale != nil {
		stale.revoke(closeResumed)
	}
	// No more frames for it: then everything already on its way through
	// the dispatcher lands in the queue.
	s.unsubscribe()
	e.mark(s.disp)
	s.mu.Lock()
	rooms := s.rooms
	s.rooms = nil
	s.mu.Unlock()
	for rt := range rooms {
		e.rooms.leave(rt, s)
	}
	s.mu.Lock()
	received := int64(-1)
	if in.Received != nil {
		received = *in.Received
	}
	frames := append(s.sent.undelivered(received), s.queue...)
	s.sent = nil
	out := wire.HandoverReply{OK: true, Frames: make([]wire.HeldFrame, 0, len(frames))}
	for _, f := range frames {
		out.Frames = append(out.Frames, wire.HeldFrame{Data: f.data, Seq: f.seq, From: f.from, Edge: f.edge, Reply: f.reply})
	}
	for p := range s.peers {
		out.Peers = append(out.Peers, p)
	}
	if len(s.watches) > 0 {
		out.Watches = make(map[string]bool, len(s.watches))
		for _, w := range s.watches {
			out.Watches[w.name] = w.online
		}
	}
	s.queue, s.qbytes = nil, 0
	s.state = sesEnded
	s.mu.Unlock()
	s.forget()
	e.stats.handedOver.Add(1)
	return out
}

// takeOver completes a resumed login on c: the rooms of the session are
// subscribed here, the old edge hands over what it kept, and the session
// goes live. When the old edge does not answer (it died), the session goes
// live with what this edge received itself.
func (e *Edge) takeOver(c *conn, s *session, rep wire.LoginReply, reply []byte, received *int64) {
	for _, room := range rep.Rooms {
		if names.Check(room) != nil {
			continue
		}
		rt := names.Token(room)
		if e.rooms.join(rt, s, false) == nil {
			s.mu.Lock()
			if s.rooms == nil {
				s.rooms = make(map[string]string)
			}
			s.rooms[rt] = room
			s.mu.Unlock()
		}
	}
	var hr wire.HandoverReply
	if p := rep.Prev; p != nil {
		ctx, cancel := e.reqCtx()
		err := e.ask(ctx, subject.EdgeHandover(p.Edge), wire.HandoverRequest{Session: p.Session, Token: s.token, Edge: e.cfg.ID, Instance: e.instance, Received: received}, &hr)
		cancel()
		if err != nil || !hr.OK {
			e.stats.dropped[dropHandover].Add(1)
			e.log.Info("resumed session: the old edge handed nothing over", "old_edge", p.Edge, "err", err, "reason", hr.Reason)
		}
	}
	handed := make([]keptFrame, 0, len(hr.Frames))
	seen := make(map[string]uint64)
	for _, f := range hr.Frames {
		handed = append(handed, keptFrame{data: f.Data, seq: f.Seq, from: f.From, edge: f.Edge, reply: f.Reply})
		if sender, n, ok := splitSeq(f.Seq); ok && n > seen[sender] {
			seen[sender] = n
		}
	}
	s.mu.Lock()
	for _, p := range hr.Peers {
		if names.ValidToken(p) {
			s.addPeerLocked(p)
		}
	}
	s.mu.Unlock()
	s.goLive(c, reply, handed, seen)
	time.AfterFunc(dedupeWindow, func() {
		s.mu.Lock()
		s.seen = nil
		s.mu.Unlock()
	})
	if len(hr.Watches) > 0 {
		c.rewatch(s, hr.Watches)
	}
}

// ask sends one request to another edge and decodes its reply.
func (e *Edge) ask(ctx context.Context, subj string, req, rep any) error {
	body, _ := json.Marshal(req)
	m, err := e.nc.RequestWithContext(ctx, subj, body)
	if err != nil {
		return err
	}
	if code := m.Header.Get(wire.ErrorCodeHeader); code != "" {
		return &registryError{code: code, msg: m.Header.Get(wire.ErrorHeader)}
	}
	return json.Unmarshal(m.Data, rep)
}

// releaseAllHeld releases every held session now (at shutdown), at most 16
// at a time, each bounded by Shutdown's context.
func (e *Edge) releaseAllHeld() {
	var held []*session
	for _, s := range e.sessions.snapshot() {
		s.mu.Lock()
		if s.state == sesHeld {
			s.timer.Stop()
			s.state = sesEnded
			held = append(held, s)
		}
		s.mu.Unlock()
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, s := range held {
		e.stats.held.Add(-1)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.release(events.ReasonDrop)
		}()
	}
	wg.Wait()
}

// revoke ends the connection of a session whose name is no longer its own:
// nothing it sends counts, and it is closed with cr.
func (c *conn) revoke(cr closeReason) {
	c.revoked.Store(true)
	c.closeWith(cr)
}
