package edge

import (
	"hash/maphash"
	"strconv"
	"sync"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Rooms: membership is the registry's (KV "rooms", exact limit); an edge
// subscribes "room.<token>" while it has members of the room, and delivers
// what comes there (joined, parted, room messages) to each local member but
// the sender. Room names follow the name rules and go through the name
// token encoding, so a room called "*" or "room.>" is a plain token.

// join handles {"type":"join","room":R}.
func (c *conn) join(s *session, f *protocol.Frame) {
	e := c.e
	room, rt, ok := c.roomOf(f, "join")
	if !ok {
		return
	}
	s.mu.Lock()
	_, member := s.rooms[rt]
	n := len(s.rooms)
	s.mu.Unlock()
	switch {
	case member:
		c.roomReply("join", false, f.Room, wire.ReasonMember)
		return
	case n >= e.cfg.MaxRooms:
		e.stats.errors[reasonRoomLimit].Add(1)
		c.roomReply("join", false, f.Room, "too many rooms (limit "+strconv.Itoa(e.cfg.MaxRooms)+" per connection, -max-rooms)")
		return
	}
	// Subscribe before the registry adds the member: what the other
	// members send once they know is not missed. It waits, unseen, until
	// the reply has told the member list (seat).
	if err := e.rooms.join(rt, s, true); err != nil {
		c.roomReply("join", false, f.Room, errBusDown)
		return
	}
	ctx, cancel := e.reqCtx()
	var rep wire.JoinReply
	err := e.call(ctx, subject.RegistryJoin, wire.JoinRequest{Room: room, Name: s.name, Edge: e.cfg.ID, Session: s.id, Max: e.cfg.MaxRoom}, &rep)
	cancel()
	if err != nil || !rep.OK {
		e.rooms.leave(rt, s)
		switch {
		case err != nil:
			c.roomReply("join", false, f.Room, "join failed: "+err.Error()+"; try again")
		case rep.Reason == wire.ReasonFull:
			e.stats.errors[reasonRoomFull].Add(1)
			limit := rep.Limit
			if limit == 0 {
				limit = e.cfg.MaxRoom
			}
			c.roomReply("join", false, f.Room, "room is full (limit "+strconv.Itoa(limit)+" members, -max-room)")
		default:
			c.roomReply("join", false, f.Room, rep.Reason)
		}
		return
	}
	s.mu.Lock()
	switch st := s.state; st {
	case sesExpiring, sesHanding, sesEnded:
		// The session ended, or went to another edge, while its join
		// waited: what released its rooms here did not know of this one.
		// Give the local seat back; an ended session's seat in the
		// registry too (a resumed one's went with it: the registry moves
		// its members to the new session).
		s.mu.Unlock()
		e.rooms.leave(rt, s)
		if st != sesHanding {
			ctx, cancel := e.reqCtx()
			_ = e.call(ctx, subject.RegistryPart, wire.PartRequest{Room: room, Name: s.name, Session: s.id}, new(wire.PartReply))
			cancel()
		}
		return
	}
	if s.rooms == nil {
		s.rooms = make(map[string]string)
	}
	s.rooms[rt] = room
	s.mu.Unlock()
	if rep.Users == nil {
		rep.Users = []string{}
	}
	c.enqueue(ws.OpText, protocol.AppendJoinOK(nil, f.Room, rep.Users))
	if lost := e.rooms.seat(rt, s, rep.Users); lost > 0 {
		c.sendError(reasonRoomBusy, strconv.Itoa(lost)+` frames of room "`+room+`" sent while your join was waiting were dropped (too many); part and join again for a fresh member list`)
	}
}

// part handles {"type":"part","room":R}.
func (c *conn) part(s *session, f *protocol.Frame) {
	e := c.e
	room, rt, ok := c.roomOf(f, "part")
	if !ok {
		return
	}
	s.mu.Lock()
	_, member := s.rooms[rt]
	s.mu.Unlock()
	if !member {
		c.roomReply("part", false, f.Room, wire.ReasonNoMember)
		return
	}
	ctx, cancel := e.reqCtx()
	var rep wire.PartReply
	err := e.call(ctx, subject.RegistryPart, wire.PartRequest{Room: room, Name: s.name, Session: s.id}, &rep)
	cancel()
	if err != nil {
		c.roomReply("part", false, f.Room, "part failed: "+err.Error()+"; try again")
		return
	}
	s.mu.Lock()
	delete(s.rooms, rt)
	s.mu.Unlock()
	e.rooms.leave(rt, s)
	c.roomReply("part", true, f.Room, "")
}

// roomMessage handles {"type":"message","room":R,"data":X}: every other
// member gets {"type":"message","room":R,"name":SENDER,"data":X}.
func (c *conn) roomMessage(s *session, f *protocol.Frame) {
	e := c.e
	if !f.RoomIsString {
		c.sendError(reasonBadRoom, `missing "room": the room to send to`)
		return
	}
	rt := names.Token(string(f.Room))
	s.mu.Lock()
	_, member := s.rooms[rt]
	s.mu.Unlock()
	if !member {
		c.sendError(reasonBadRoom, `not a member of room "`+string(f.Room)+`": join it first`)
		return
	}
	if f.Payload == nil {
		c.sendError(reasonMissingPayload, `missing "data"`)
		return
	}
	if !c.natsUp() {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	p := c.sender(s)
	p.stamp(s, nil)
	bp := readBufs.Get().(*[]byte)
	out := protocol.AppendRoomMessage((*bp)[:0], f.Room, s.nameBytes(), f.Payload)
	pub := nats.Msg{Subject: subject.Room(rt), Header: p.hdr, Data: out}
	// Through nats.go, after what the poller's batch holds (this
	// connection's relays among it), and before its next direct publish.
	c.flushDirect()
	if err := e.nc.PublishMsg(&pub); err != nil {
		c.sendError(reasonBusDown, errBusDown)
	} else {
		p.viaNats = true
		e.stats.relayed[protocol.TypeMessage].Add(1)
	}
	if cap(out) <= 64<<10 {
		*bp = out[:0]
		readBufs.Put(bp)
	}
}

// roomOf validates the room of a join or part; false when the client has
// been answered.
func (c *conn) roomOf(f *protocol.Frame, typ string) (room, tok string, ok bool) {
	if !f.RoomIsString {
		c.e.stats.errors[reasonBadRoom].Add(1)
		c.roomReply(typ, false, f.Room, `missing "room": the room to `+typ)
		return "", "", false
	}
	if err := names.CheckBytes(f.Room); err != nil {
		c.e.stats.errors[reasonBadRoom].Add(1)
		c.roomReply(typ, false, f.Room, "invalid room: "+err.Error())
		return "", "", false
	}
	room = string(f.Room)
	return room, names.Token(room), true
}

func (c *conn) roomReply(typ string, ok bool, room []byte, msg string) {
	c.enqueue(ws.OpText, protocol.AppendRoomReply(nil, typ, ok, room, msg))
}

// localRoom is a room with members on this edge.
type localRoom struct {
	e       *Edge
	tok     string
	sub     *nats.Subscription
	mu      sync.Mutex
	members map[*session]*roomSeat
}

// roomSeat is a local member's view of its room. While its join waits on
// the registry (pending), the room's frames wait in held, unseen: the join
// reply comes first. The reply lists the other members (known, by token);
// from then on a joined of a member already known, or a parted of one not
// known, is news the list already told (a join that raced this one, whose
// registry announced it late), and is not delivered: each member is told
// once of each other member, reply or joined, in order. Room messages all
// pass: a member's first message can overtake its joined (they come from
// different processes), and must not be lost for it.
type roomSeat struct {
	pending   bool
	held      []keptFrame
	heldBytes int
	lost      int                 // frames not held (over the bounds below)
	known     map[string]struct{} // nil: no list to hold the frames to (a resumed session's rooms)
}

// Bounds of what a pending join holds: room messages up to
// maxHeldRoomFrames and maxHeldRoomBytes; joined and parted (small, and
// what the member list is made of) up to maxHeldRoomChanges. Beyond them a
// frame is dropped, counted, and the client is told after its join reply.
const (
	maxHeldRoomFrames  = 256
	maxHeldRoomBytes   = 256 << 10
	maxHeldRoomChanges = 1024
)

// hold keeps f for the pending seat; false when a bound refused it. r.mu
// is held.
func (st *roomSeat) hold(f keptFrame) bool {
	change := protocol.IsJoined(f.data) || protocol.IsParted(f.data)
	switch {
	case change && len(st.held) < maxHeldRoomChanges:
	case !change && len(st.held) < maxHeldRoomFrames && st.heldBytes+len(f.data) <= maxHeldRoomBytes:
	default:
		st.lost++
		return false
	}
	st.held = append(st.held, f)
	st.heldBytes += len(f.data)
	return true
}

// admit tells whether f, from the member whose token is f.from, is news
// to the seat, and updates what it knows. r.mu is held.
func (st *roomSeat) admit(f keptFrame) bool {
	if st.known == nil {
		return true
	}
	_, known := st.known[f.from]
	switch {
	case protocol.IsJoined(f.data):
		if known {
			return false
		}
		st.known[f.from] = struct{}{}
	case protocol.IsParted(f.data):
		if !known {
			return false
		}
		delete(st.known, f.from)
	}
	return true
}

// deliver hands a room frame to every local member but its sender.
func (r *localRoom) deliver(f keptFrame) {
	r.mu.Lock()
	members := make([]*session, 0, len(r.members))
	for s, st := range r.members {
		switch {
		case s.token == f.from:
		case st.pending:
			if !st.hold(f) {
				r.e.stats.dropped[dropJoinPending].Add(1)
			}
		case st.admit(f):
			members = append(members, s)
		}
	}
	r.mu.Unlock()
	for _, s := range members {
		s.deliver(f, true)
	}
}

// roomTable holds the rooms with local members.
type roomTable struct {
	e      *Edge
	mu     sync.Mutex
	rooms  map[string]*localRoom
	bySub  sync.Map // *nats.Subscription -> *localRoom
	seed   maphash.Seed
	closed bool
}

func (t *roomTable) init(e *Edge) {
	t.e = e
	t.rooms = make(map[string]*localRoom)
	t.seed = maphash.MakeSeed()
}

// join adds s to the local members of rt, subscribing the room if it is
// new here. A pending member sees nothing of the room until seat.
func (t *roomTable) join(rt string, s *session, pending bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errStopping
	}
	r := t.rooms[rt]
	if r == nil {
		r = &localRoom{e: t.e, tok: rt, members: make(map[*session]*roomSeat)}
		// A room's frames go through one dispatcher, in order.
		ch := t.e.msgs[maphash.String(t.seed, rt)%uint64(len(t.e.msgs))]
		sub, err := t.e.nc.ChanSubscribe(subject.Room(rt), ch)
		if err != nil {
			return err
		}
		r.sub = sub
		t.rooms[rt] = r
		t.bySub.Store(sub, r)
	}
	r.mu.Lock()
	r.members[s] = &roomSeat{pending: pending}
	r.mu.Unlock()
	return nil
}

// seat ends the pending join of s to rt, whose reply listed users (the
// other members) and has been sent: what the room sent meanwhile follows
// it, in order, but for what the list already told. It returns how many
// frames the bounds of a pending join dropped.
func (t *roomTable) seat(rt string, s *session, users []string) (lost int) {
	t.mu.Lock()
	r := t.rooms[rt]
	t.mu.Unlock()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	st := r.members[s]
	if st == nil {
		r.mu.Unlock()
		return 0
	}
	st.known = make(map[string]struct{}, len(users))
	for _, u := range users {
		st.known[names.Token(u)] = struct{}{}
	}
	// Frames that come while the held ones are delivered join them, so
	// that nothing overtakes them: the seat stays pending until it has
	// none left.
	for len(st.held) > 0 {
		held := st.held
		st.held = nil
		r.mu.Unlock()
		for _, f := range held {
			r.mu.Lock()
			ok := st.admit(f)
			r.mu.Unlock()
			if ok {
				s.deliver(f, true)
			}
		}
		r.mu.Lock()
	}
	st.pending = false
	st.heldBytes = 0
	lost, st.lost = st.lost, 0
	r.mu.Unlock()
	return lost
}

// leave removes s from rt's local members, unsubscribing the room when it
// has none left.
func (t *roomTable) leave(rt string, s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[rt]
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.members, s)
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		_ = r.sub.Unsubscribe()
		t.bySub.Delete(r.sub)
		delete(t.rooms, rt)
	}
}

func (t *roomTable) bySubscription(sub *nats.Subscription) *localRoom {
	r, _ := t.bySub.Load(sub)
	lr, _ := r.(*localRoom)
	return lr
}

// unsubscribeAll ends every room subscription and refuses new ones (at
// shutdown, before the dispatchers' channels close).
func (t *roomTable) unsubscribeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for rt, r := range t.rooms {
		_ = r.sub.Unsubscribe()
		t.bySub.Delete(r.sub)
		delete(t.rooms, rt)
	}
}
