package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Headers of a conditional JetStream publish: the write succeeds only if
// the last message on the subjects matching the filter is still the one
// with the given sequence.
const (
	hdrExpectedLastSubjSeq     = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectedLastSubjSeqSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
	errCodeWrongLastSeq        = 10071
)

// joinAttempts bounds the retries of a join that lost a race for its room.
const joinAttempts = 32

func (r *Registry) handleJoin(req micro.Request) {
	var in wire.JoinRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error(wire.CodeBadRequest, "malformed join request: "+err.Error(), nil)
		return
	}
	if err := errors.Join(names.Check(in.Room), names.Check(in.Name)); err != nil || in.Session == "" {
		_ = req.Error(wire.CodeBadRequest, fmt.Sprintf("join request: bad room, name or session (%v)", err), nil)
		return
	}
	ctx, cancel := r.reqCtx()
	defer cancel()
	out, err := r.Join(ctx, in)
	if err != nil {
		r.metrics.joins.WithLabelValues("error").Inc()
		r.log.Error("join failed", "err", err)
		_ = req.Error(wire.CodeInternal, err.Error(), nil)
		return
	}
	switch {
	case out.OK:
		r.metrics.joins.WithLabelValues("joined").Inc()
	case out.Reason == wire.ReasonFull:
		r.metrics.joins.WithLabelValues("full").Inc()
	default:
		r.metrics.joins.WithLabelValues("refused").Inc()
	}
	_ = req.RespondJSON(out)
}

// Join adds in.Name to in.Room, unless the room has MaxRoom members. It
// counts the members in its view of the rooms bucket and writes the new
// member's key only if no key of the room changed since (the server checks
// the last sequence of "$KV.rooms.<room>.*"), so that of two edges racing
// for the last seat, on any registry instances, exactly one wins; the loser
// counts again. On success the room's other members get joined and the
// reply lists them. A join retried by the same session is answered as the
// first one was.
func (r *Registry) Join(ctx context.Context, in wire.JoinRequest) (wire.JoinReply, error) {
	rt, mt := names.Token(in.Room), names.Token(in.Name)
	val, _ := json.Marshal(wire.Member{Room: in.Room, Name: in.Name, Edge: in.Edge, Session: in.Session, Since: time.Now().UTC()})
	filter := "$KV." + r.rooms.Bucket() + "." + rt + ".*"
	limit := r.cfg.MaxRoom
	if in.Max > 0 {
		limit = min(limit, in.Max)
	}
	// hint is the room's last sequence as the server last reported it.
	var hint uint64
	haveHint := false
	for attempt := 0; attempt < joinAttempts; attempt++ {
		users, have, seq, mine := r.view.roomState(rt, mt, in.Session)
		if mine {
			return wire.JoinReply{OK: true, Users: users}, nil
		}
		if haveHint {
			seq = hint
		}
		if !have && len(users) >= limit {
			return wire.JoinReply{OK: false, Reason: wire.ReasonFull, Limit: limit}, nil
		}
		m := &nats.Msg{Subject: "$KV." + r.rooms.Bucket() + "." + subject.RoomKey(rt, mt), Data: val, Header: nats.Header{
			hdrExpectedLastSubjSeq:     {strconv.FormatUint(seq, 10)},
			hdrExpectedLastSubjSeqSubj: {filter},
		}}
		ack, err := r.js.PublishMsg(ctx, m)
		if err == nil {
			r.view.waitRooms(ctx, ack.Sequence)
			r.joined(rt, mt, in)
			return wire.JoinReply{OK: true, Users: users}, nil
		}
		cur, ok := wrongLastSeq(err)
		if !ok {
			return wire.JoinReply{}, fmt.Errorf("join %s.%s: %w", rt, mt, err)
		}
		// The room changed since the view counted it (or a member's delete
		// marker expired): count again once the view has seen everything
		// up to the server's number, and expect that number.
		hint, haveHint = cur, true
		r.view.waitRooms(ctx, cur)
		if ctx.Err() != nil {
			return wire.JoinReply{}, ctx.Err()
		}
	}
	return wire.JoinReply{}, fmt.Errorf("join %s.%s: the room kept changing (%d attempts)", rt, mt, joinAttempts)
}

// wrongLastSeq returns the server's current last sequence from a
// conditional publish that failed on it.
func wrongLastSeq(err error) (uint64, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeWrongLastSeq {
		return 0, false
	}
	_, num, ok := strings.Cut(apiErr.Description, "wrong last sequence: ")
	if !ok {
		return 0, true
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	return n, true
}

// roomState returns, from the view, the names of rt's members other than
// mt, whether mt is a member already (have) and with session (mine), and the
// last sequence the room's keys had.
func (v *view) roomState(rt, mt, session string) (users []string, have bool, seq uint64, mine bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	rv := v.rooms[rt]
	if rv == nil {
		return []string{}, false, v.lastSeq(rt), false
	}
	users = make([]string, 0, len(rv.members))
	for tok, m := range rv.members {
		if tok == mt {
			have, mine = true, m.Session == session
			continue
		}
		users = append(users, m.Name)
	}
	slices.Sort(users)
	return users, have, v.lastSeq(rt), mine
}

// lastSeq is the highest revision of rt's keys that the view has seen,
// including delete markers, while the room has members; zero otherwise (a
// join then learns the server's number from its first attempt). v.mu must
// be held.
func (v *view) lastSeq(rt string) uint64 {
	if rv := v.rooms[rt]; rv != nil {
		return rv.last
	}
	return 0
}

// joined tells the other members of rt that in.Name joined, and records
// the event.
func (r *Registry) joined(rt, mt string, in wire.JoinRequest) {
	msg := &nats.Msg{Subject: subject.Room(rt), Header: nats.Header{subject.HeaderFrom: {mt}},
		Data: protocol.AppendJoined(nil, []byte(in.Room), []byte(in.Name))}
	_ = r.nc.PublishMsg(msg)
	r.events.publish(mt, events.Event{Kind: events.KindJoin, Name: in.Name, Edge: in.Edge, Time: time.Now().UTC(), Session: in.Session, Room: in.Room}, "")
}

func (r *Registry) handlePart(req micro.Request) {
	var in wire.PartRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error(wire.CodeBadRequest, "malformed part request: "+err.Error(), nil)
		return
	}
	if err := errors.Join(names.Check(in.Room), names.Check(in.Name)); err != nil {
		_ = req.Error(wire.CodeBadRequest, "part request: "+err.Error(), nil)
		return
	}
	ctx, cancel := r.reqCtx()
	defer cancel()
	ok, err := r.part(ctx, names.Token(in.Room), names.Token(in.Name), in.Room, in.Name, in.Session, events.ReasonPart)
	if err != nil {
		r.log.Error("part failed", "err", err)
		_ = req.Error(wire.CodeInternal, err.Error(), nil)
		return
	}
	if !ok {
		_ = req.RespondJSON(wire.PartReply{OK: false, Reason: wire.ReasonNoMember})
		return
	}
	_ = req.RespondJSON(wire.PartReply{OK: true})
}

// part removes mt from rt and tells the other members; false when mt was
// not a member.
func (r *Registry) part(ctx context.Context, rt, mt, room, name, session, reason string) (bool, error) {
	key := subject.RoomKey(rt, mt)
	e, err := r.rooms.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("part %s: %w", key, err)
	}
	var m wire.Member
	_ = json.Unmarshal(e.Value(), &m)
	if room == "" {
		room = m.Room
	}
	err = r.rooms.Purge(ctx, key, jetstream.LastRevision(e.Revision()), jetstream.PurgeTTL(r.cfg.MarkerTTL))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false, nil // parted (or joined again) meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("part %s: %w", key, err)
	}
	msg := &nats.Msg{Subject: subject.Room(rt), Header: nats.Header{subject.HeaderFrom: {mt}},
		Data: protocol.AppendParted(nil, []byte(room), []byte(name))}
	_ = r.nc.PublishMsg(msg)
	r.events.publish(mt, events.Event{Kind: events.KindPart, Name: name, Edge: m.Edge, Time: time.Now().UTC(), Session: session, Room: room, Reason: reason}, "")
	return true, nil
}

// partAll parts every room of a session that ended: those its edge named
// and those the view knows of.
func (r *Registry) partAll(ctx context.Context, mt, name, session string, rooms []string, reason string) {
	seen := make(map[string]bool)
	for _, room := range rooms {
		if names.Check(room) != nil {
			continue
		}
		rt := names.Token(room)
		seen[rt] = true
		if _, err := r.part(ctx, rt, mt, room, name, session, reason); err != nil {
			r.log.Warn("part at logout failed", "err", err)
		}
	}
	for _, room := range r.view.roomsOf(mt) {
		if rt := names.Token(room); !seen[rt] {
			if _, err := r.part(ctx, rt, mt, room, name, session, reason); err != nil {
				r.log.Warn("part at logout failed", "err", err)
			}
		}
	}
}

// moveMembers points tok's member entries at its resumed session.
func (r *Registry) moveMembers(ctx context.Context, tok string, rooms []string, e wire.Entry) {
	for _, room := range rooms {
		rt := names.Token(room)
		key := subject.RoomKey(rt, tok)
		cur, err := r.rooms.Get(ctx, key)
		if err != nil {
			continue
		}
		var m wire.Member
		if json.Unmarshal(cur.Value(), &m) != nil {
			continue
		}
		m.Edge, m.Session = e.Edge, e.Session
		val, _ := json.Marshal(m)
		if _, err := r.rooms.Update(ctx, key, val, cur.Revision()); err != nil {
			r.log.Debug("moving a room member to its resumed session", "err", err)
		}
	}
}
