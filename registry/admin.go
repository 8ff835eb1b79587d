package registry

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/wire"
)

// The admin endpoints answer from the registry's view of the buckets, which
// may lag them by a moment; a kick is written with the same guard as every
// release.

func (r *Registry) handleUsers(req micro.Request) {
	var in wire.UsersRequest
	if len(req.Data()) > 0 {
		if err := json.Unmarshal(req.Data(), &in); err != nil {
			_ = req.Error(wire.CodeBadRequest, "malformed users request: "+err.Error(), nil)
			return
		}
	}
	_ = req.RespondJSON(r.Users(in))
}

// Users returns a page of online users, as registry.users does: names that
// start with in.Prefix, in byte order, after in.After, at most in.Limit.
func (r *Registry) Users(in wire.UsersRequest) wire.UsersReply {
	limit := in.Limit
	if limit <= 0 {
		limit = wire.DefaultUsersLimit
	}
	limit = min(limit, wire.MaxUsersLimit)
	v := r.view
	v.mu.RLock()
	all := make([]wire.User, 0, min(len(v.users), 4*limit))
	for tok, h := range v.users {
		name, err := names.Decode(tok)
		if err != nil || !strings.HasPrefix(name, in.Prefix) || (in.After != "" && name <= in.After) {
			continue
		}
		all = append(all, wire.User{Name: name, Edge: h.inst.edge, Since: time.Unix(0, h.since).UTC()})
	}
	v.mu.RUnlock()
	slices.SortFunc(all, func(a, b wire.User) int { return strings.Compare(a.Name, b.Name) })
	out := wire.UsersReply{Users: all}
	if len(all) > limit {
		out.Users = all[:limit]
		out.Next = all[limit-1].Name
	}
	return out
}

func (r *Registry) handleRooms(req micro.Request) {
	var in wire.RoomsRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil || names.Check(in.Room) != nil {
		_ = req.Error(wire.CodeBadRequest, `rooms request: want {"room":"<name>"}`, nil)
		return
	}
	_ = req.RespondJSON(r.Room(in.Room))
}

// Room returns the members of room, as registry.rooms does, in name order.
func (r *Registry) Room(room string) wire.RoomsReply {
	v := r.view
	v.mu.RLock()
	out := wire.RoomsReply{Room: room, Members: []wire.Member{}}
	if rv := v.rooms[names.Token(room)]; rv != nil {
		for _, m := range rv.members {
			out.Members = append(out.Members, m)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(out.Members, func(a, b wire.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (r *Registry) handleKick(req micro.Request) {
	var in wire.KickRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil || names.Check(in.Name) != nil {
		_ = req.Error(wire.CodeBadRequest, `kick request: want {"name":"<name>","reason":"..."}`, nil)
		return
	}
	out, err := r.Kick(in)
	if err != nil {
		r.log.Error("kick failed", "err", err)
		_ = req.Error(wire.CodeInternal, err.Error(), nil)
		return
	}
	_ = req.RespondJSON(out)
}

// Kick releases in.Name at once, as registry.kick does: presence.offline
// (reason kicked, with in.Reason as its message) makes the name's edge send
// the client an error frame with the reason and close it with 4003, and the
// peers' edges send them leave; its rooms are parted. OK false with
// wire.ReasonNotFound when the name is not online.
func (r *Registry) Kick(in wire.KickRequest) (wire.KickReply, error) {
	tok := names.Token(in.Name)
	ctx, cancel := r.reqCtx()
	defer cancel()
	for range 3 {
		e, err := r.users.Get(ctx, tok)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return wire.KickReply{OK: false, Reason: wire.ReasonNotFound}, nil
		}
		if err != nil {
			return wire.KickReply{}, err
		}
		var cur wire.Entry
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return wire.KickReply{}, err
		}
		err = r.releaseRev(ctx, tok, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // resumed or released meanwhile: look again
		}
		if err != nil {
			return wire.KickReply{}, err
		}
		r.metrics.releases.WithLabelValues(events.ReasonKicked).Inc()
		r.released(ctx, tok, wire.Presence{
			Name: cur.Name, Edge: cur.Edge, Instance: cur.Instance, Session: cur.Session,
			Reason: events.ReasonKicked, Message: in.Reason,
		}, nil)
		return wire.KickReply{OK: true, Edge: cur.Edge}, nil
	}
	return wire.KickReply{}, errors.New("kick: the entry kept changing")
}
