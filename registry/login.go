package registry

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

func (r *Registry) handleLogin(req micro.Request) {
	var in wire.LoginRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error(wire.CodeBadRequest, "malformed login request: "+err.Error(), nil)
		return
	}
	if err := names.Check(in.Name); err != nil {
		_ = req.Error(wire.CodeBadRequest, err.Error(), nil)
		return
	}
	if in.Edge == "" || in.Session == "" {
		_ = req.Error(wire.CodeBadRequest, "login request without edge or session", nil)
		return
	}
	if !in.Deadline.IsZero() && time.Now().After(in.Deadline.Add(wire.LoginDeadlineSlack)) {
		// The edge gave up on this attempt long ago (it waited in the
		// queue): taking the name now would hold it for nobody.
		r.metrics.logins.WithLabelValues("expired").Inc()
		_ = req.Error(wire.CodeExpired, "login request expired", nil)
		return
	}
	ctx, cancel := r.reqCtx()
	defer cancel()
	out, err := r.Login(ctx, in)
	switch {
	case err != nil:
		r.metrics.logins.WithLabelValues("error").Inc()
	case out.Resumed:
		r.metrics.logins.WithLabelValues("resumed").Inc()
	case out.OK:
		r.metrics.logins.WithLabelValues("accepted").Inc()
	case out.Reason == wire.ReasonBadToken:
		r.metrics.logins.WithLabelValues("bad_token").Inc()
	default:
		r.metrics.logins.WithLabelValues("taken").Inc()
	}
	if err != nil {
		r.log.Error("login failed", "err", err)
		_ = req.Error(wire.CodeInternal, err.Error(), nil)
		return
	}
	_ = req.RespondJSON(out)
}

// Login creates the entry of in.Name; it is what registry.login does.
//
// A name that is taken yields OK false, Reason wire.ReasonTaken and no
// error, unless in.Resume is the resume token of the session holding it:
// then the entry passes to the new session (guarded by its revision), and
// the reply names the previous session (Prev) and its rooms, so that the
// new edge can ask the old one for what it kept. A request retried with the
// same session (its reply was lost, or its registry died) is answered as
// the first one was, without taking anything twice.
func (r *Registry) Login(ctx context.Context, in wire.LoginRequest) (wire.LoginReply, error) {
	tok := names.Token(in.Name)
	entry := wire.Entry{
		Name:       in.Name,
		Edge:       in.Edge,
		Instance:   in.Instance,
		Session:    in.Session,
		Since:      time.Now().UTC(),
		ResumeHash: in.ResumeHash,
	}
	for range 3 { // a name released between Create and Get is tried again
		val, _ := json.Marshal(entry)
		rev, err := r.users.Create(ctx, tok, val)
		if err == nil {
			r.announceOnline(tok, entry)
			return wire.LoginReply{OK: true, Token: tok, Revision: rev}, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return wire.LoginReply{}, fmt.Errorf("create %s: %w", tok, err)
		}
		e, err := r.users.Get(ctx, tok)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return wire.LoginReply{}, fmt.Errorf("get %s: %w", tok, err)
		}
		var cur wire.Entry
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return wire.LoginReply{}, fmt.Errorf("entry %s: %w", tok, err)
		}
		if cur.Session == in.Session {
			// A retry of a login that succeeded.
			rep := wire.LoginReply{OK: true, Token: tok, Revision: e.Revision()}
			if cur.Prev != nil {
				rep.Resumed, rep.Prev, rep.Rooms = true, cur.Prev, r.view.roomsOf(tok)
			}
			return rep, nil
		}
		if in.Resume == "" {
			return wire.LoginReply{OK: false, Reason: wire.ReasonTaken, Token: tok}, nil
		}
		if cur.ResumeHash == "" || !equalHash(cur.ResumeHash, wire.HashToken(in.Resume)) {
			return wire.LoginReply{OK: false, Reason: wire.ReasonBadToken, Token: tok}, nil
		}
		return r.resume(ctx, tok, entry, cur, e.Revision())
	}
	return wire.LoginReply{OK: false, Reason: wire.ReasonTaken, Token: tok}, nil
}

// resume hands the entry of tok, now cur at revision rev, to the session of
// entry.
func (r *Registry) resume(ctx context.Context, tok string, entry, cur wire.Entry, rev uint64) (wire.LoginReply, error) {
	prev := &wire.SessionRef{Edge: cur.Edge, Instance: cur.Instance, Session: cur.Session}
	entry.Prev = prev
	val, _ := json.Marshal(entry)
	nrev, err := r.users.Update(ctx, tok, val, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released or resumed by someone else meanwhile: the client tries
		// again.
		return wire.LoginReply{OK: false, Reason: wire.ReasonTaken, Token: tok}, nil
	}
	if err != nil {
		return wire.LoginReply{}, fmt.Errorf("update %s: %w", tok, err)
	}
	now := time.Now().UTC()
	r.events.publish(tok, events.Event{Kind: events.KindLogout, Name: cur.Name, Edge: cur.Edge, Time: now, Session: cur.Session, Reason: events.ReasonResumed}, cur.Session+".logout")
	r.events.publish(tok, events.Event{Kind: events.KindLogin, Name: entry.Name, Edge: entry.Edge, Time: now, Session: entry.Session, Resumed: true}, entry.Session+".login")
	rooms := r.view.roomsOf(tok)
	r.moveMembers(ctx, tok, rooms, entry)
	return wire.LoginReply{OK: true, Token: tok, Revision: nrev, Resumed: true, Prev: prev, Rooms: rooms}, nil
}

func equalHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (r *Registry) handleLogout(req micro.Request) {
	var in wire.LogoutRequest
	if err := json.Unmarshal(req.Data(), &in); err != nil {
		_ = req.Error(wire.CodeBadRequest, "malformed logout request: "+err.Error(), nil)
		return
	}
	if err := names.Check(in.Name); err != nil {
		_ = req.Error(wire.CodeBadRequest, err.Error(), nil)
		return
	}
	ctx, cancel := r.reqCtx()
	defer cancel()
	out, err := r.Logout(ctx, in)
	switch {
	case err != nil:
		r.metrics.logouts.WithLabelValues("error").Inc()
	case out.OK:
		r.metrics.logouts.WithLabelValues("released").Inc()
	case out.Reason == wire.ReasonNotOwner:
		r.metrics.logouts.WithLabelValues("not_owner").Inc()
	default:
		r.metrics.logouts.WithLabelValues("not_found").Inc()
	}
	if err != nil {
		r.log.Error("logout failed", "err", err)
		_ = req.Error(wire.CodeInternal, err.Error(), nil)
		return
	}
	_ = req.RespondJSON(out)
}

// Logout removes the entry of in.Name if in.Session still owns it (or, when
// in.Revision is set, if the entry is still that revision); it is what
// registry.logout does. The delete is guarded by the entry's revision, so
// it never removes an entry that a newer login created meanwhile. A name
// released is announced (presence.offline, the logout event) and its rooms
// are parted.
func (r *Registry) Logout(ctx context.Context, in wire.LogoutRequest) (wire.LogoutReply, error) {
	tok := names.Token(in.Name)
	p := wire.Presence{Name: in.Name, Edge: in.Edge, Instance: in.Instance, Session: in.Session, Reason: in.Reason}
	if p.Reason == "" {
		p.Reason = events.ReasonClose
	}
	rev := in.Revision
	if rev == 0 {
		// No revision: find the session's entry first.
		e, err := r.users.Get(ctx, tok)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return wire.LogoutReply{OK: false, Reason: wire.ReasonNotFound}, nil
		case err != nil:
			return wire.LogoutReply{}, fmt.Errorf("get %s: %w", tok, err)
		}
		var cur wire.Entry
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return wire.LogoutReply{}, fmt.Errorf("entry %s: %w", tok, err)
		}
		if cur.Session != in.Session {
			return wire.LogoutReply{OK: false, Reason: wire.ReasonNotOwner}, nil
		}
		rev, p.Edge, p.Instance = e.Revision(), cur.Edge, cur.Instance
	}
	// One delete guarded by the revision the session's login created: a
	// resume or a newer login has a newer revision, so the delete cannot
	// touch it.
	if err := r.releaseRev(ctx, tok, rev); err != nil {
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return wire.LogoutReply{}, err
		}
		// Gone (a retried logout) or someone else's now.
		if _, gerr := r.users.Get(ctx, tok); errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
			return wire.LogoutReply{OK: false, Reason: wire.ReasonNotFound}, nil
		}
		return wire.LogoutReply{OK: false, Reason: wire.ReasonNotOwner}, nil
	}
	r.released(ctx, tok, p, in.Rooms)
	return wire.LogoutReply{OK: true}, nil
}

// releaseRev removes tok if its latest revision is still rev.
func (r *Registry) releaseRev(ctx context.Context, tok string, rev uint64) error {
	err := r.users.Purge(ctx, tok, jetstream.LastRevision(rev), jetstream.PurgeTTL(r.cfg.MarkerTTL))
	if err != nil {
		return fmt.Errorf("release %s@%d: %w", tok, rev, err)
	}
	return nil
}

// released tells everyone that tok's session p is gone: presence.offline
// (watchers; the peers' edges when the session's own edge cannot tell
// them), the logout event, and a part of every room it was in (rooms, which
// its edge named, and those the view knows of).
func (r *Registry) released(ctx context.Context, tok string, p wire.Presence, rooms []string) {
	b, _ := json.Marshal(p)
	_ = r.nc.Publish(subject.PresenceOffline(tok), b)
	r.events.publish(tok, events.Event{
		Kind: events.KindLogout, Name: p.Name, Edge: p.Edge, Time: time.Now().UTC(),
		Session: p.Session, Reason: p.Reason, Message: p.Message,
	}, p.Session+".logout")
	r.partAll(ctx, tok, p.Name, p.Session, rooms, p.Reason)
}

// announceOnline publishes presence.online.<tok> and the login event of a
// fresh login.
func (r *Registry) announceOnline(tok string, e wire.Entry) {
	b, _ := json.Marshal(wire.Presence{Name: e.Name, Edge: e.Edge, Instance: e.Instance, Session: e.Session})
	_ = r.nc.Publish(subject.PresenceOnline(tok), b)
	r.events.publish(tok, events.Event{Kind: events.KindLogin, Name: e.Name, Edge: e.Edge, Time: e.Since, Session: e.Session}, e.Session+".login")
}
