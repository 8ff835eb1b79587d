package edge

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// loginExtras are the login fields beyond the tutorial's: "resumable":true
// asks for a resumable session, "resume":TOKEN takes one over.
type loginExtras struct {
	Resumable json.RawMessage `json:"resumable"`
	Resume    json.RawMessage `json:"resume"`
	// Received, with resume, is how many frames the client received on
	// its last connection after that connection's login reply.
	Received json.RawMessage `json:"received"`
}

// Messages of refused logins (the "message" of a login reply with success
// false).
const (
	msgTaken         = "name is taken"
	msgMissingName   = `missing "name": the name to log in with`
	msgNameMismatch  = "name does not match your token"
	msgLoginFailed   = "login failed: the registry did not answer; try again"
	msgNoRegistry    = "login failed: no registry is reachable; try again"
	msgStopping      = "edge is shutting down; connect again"
	msgAlreadyPrefix = `already logged in as "`
)

// login claims f.Name for this connection through the registry. Every
// login gets a login reply, success false with a message when it cannot
// succeed; an error frame may follow it.
func (c *conn) login(f *protocol.Frame, data []byte) {
	e := c.e
	if !c.countLogin() {
		return
	}
	if s := c.sess; s != nil {
		c.loginRefused(reasonAlreadyLoggedIn, msgAlreadyPrefix+s.name+`"`)
		return
	}
	if !f.NameIsString {
		c.loginRefused(reasonBadLogin, msgMissingName)
		return
	}
	if err := names.CheckBytes(f.Name); err != nil {
		c.loginRefused(reasonBadLogin, "invalid name: "+err.Error())
		return
	}
	if c.authName != "" && string(f.Name) != c.authName {
		c.loginRefused(reasonNameMismatch, msgNameMismatch)
		return
	}
	if !e.nc.IsConnected() {
		c.loginRefused(reasonBusDown, errBusDown)
		return
	}
	var x loginExtras
	_ = json.Unmarshal(data, &x) // the frame parsed: it is a valid object
	var resume string
	if len(x.Resume) > 0 && x.Resume[0] == '"' {
		_ = json.Unmarshal(x.Resume, &resume)
	}
	resumable := string(x.Resumable) == "true" || resume != ""
	var received *int64
	if n, err := strconv.ParseInt(string(x.Received), 10, 64); err == nil && n >= 0 {
		received = &n
	}
	name := string(f.Name)
	s := newSession(e, name, names.Token(name), randomID(8), resumable)
	var token string
	req := wire.LoginRequest{Name: name, Edge: e.cfg.ID, Instance: e.instance, Session: s.id, Resume: resume}
	if resumable {
		token = randomID(32)
		req.ResumeHash = wire.HashToken(token)
	}

	// Subscribe before asking the registry: the request travels behind the
	// SUB on the same connection, so once the registry has answered, the
	// server routes user.<token> here without a Flush round trip. Until the
	// login is done, frames for the name wait in the session's queue.
	s.disp = e.msgs[c.id%uint64(len(e.msgs))]
	err := e.sessions.add(s, func() (*nats.Subscription, error) { return e.nc.ChanSubscribe(subject.User(s.token), s.disp) })
	if err != nil {
		if errors.Is(err, errStopping) {
			c.loginRefused(reasonLoginFailed, msgStopping)
		} else {
			c.loginRefused(reasonBusDown, errBusDown)
		}
		return
	}
	ctx, cancel := e.reqCtx()
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d.UTC()
	}
	var rep wire.LoginReply
	err = e.call(ctx, subject.RegistryLogin, req, &rep)
	cancel()
	if err != nil || !rep.OK {
		// What reached the subscription meanwhile was for the name's
		// owner, who got it too: forget it without telling its senders.
		s.mu.Lock()
		s.state = sesEnded
		s.queue, s.qbytes = nil, 0
		s.mu.Unlock()
		s.finish(false, "")
		var regErr *registryError
		switch {
		case err == nil && rep.Reason == wire.ReasonBadToken:
			c.loginRefused(reasonBadLogin, rep.Reason)
		case err == nil:
			e.stats.logins[loginTaken].Add(1)
			c.loginReply(false, msgTaken)
		case errors.Is(err, errNoRegistry):
			c.loginRefused(reasonLoginFailed, msgNoRegistry)
		case errors.As(err, &regErr):
			c.loginRefused(reasonLoginFailed, "login failed: "+regErr.msg)
		default:
			// The registry may have created the entry and its answer got
			// lost: release it, or the name would stay taken.
			e.cleanupLogin(name, s.id)
			e.log.Warn("login failed", "err", err)
			c.loginRefused(reasonLoginFailed, msgLoginFailed)
		}
		return
	}
	s.rev = rep.Revision
	if e.closing.Load() || !c.attach(s) {
		// The edge is stopping, or the connection ended meanwhile: the
		// login logs itself out.
		s.mu.Lock()
		s.state = sesEnded
		s.mu.Unlock()
		s.release(events.ReasonClose)
		c.loginRefused(reasonLoginFailed, msgStopping)
		return
	}
	reply := c.loginOK(s, token, rep.Resumed)
	if rep.Resumed {
		e.takeOver(c, s, rep, reply, received)
		e.stats.logins[loginResumed].Add(1)
	} else {
		s.goLive(c, reply, nil, nil)
		e.stats.logins[loginOK].Add(1)
	}
	e.stats.users.Add(1)
}

// goLive makes the session live on c: the login reply first, then what the
// old edge handed over (frames, in order), then what waited in the queue
// (without the frames the hand-over had), then live traffic.
func (s *session) goLive(c *conn, reply []byte, handed []keptFrame, seen map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.enqueue(ws.OpText, reply)
	if s.resumable && c.raw != nil {
		c.wmu.Lock()
		c.track = &sentRing{login: c.texts}
		c.wmu.Unlock()
	}
	for i := range handed {
		c.enqueueKept(ws.OpText, handed[i].data, &handed[i])
	}
	s.seen = seen
	for i, f := range s.queue {
		if seen != nil && s.duplicate(f) {
			s.e.stats.duplicates.Add(1)
			continue
		}
		s.peerEffect(protocol.FrameType(f.data), f.from)
		c.enqueueKept(ws.OpText, f.data, &s.queue[i])
	}
	s.queue, s.qbytes = nil, 0
	s.conn = c
	s.state = sesLive
}

// loginOK builds the reply of a successful login:
// {"type":"login","success":true}, with "resume" for a resumable session,
// "resumed":true for a resumed one and "iceServers" with TURN configured:
// extra fields, which tutorial clients ignore.
func (c *conn) loginOK(s *session, token string, resumed bool) []byte {
	b := protocol.AppendLogin(nil, true)
	if token != "" {
		b = append(b[:len(b)-1], `,"resume":`...)
		b = append(protocol.AppendString(b, []byte(token)), '}')
	}
	if resumed {
		b = append(b[:len(b)-1], `,"resumed":true}`...)
	}
	if ice := c.e.cfg.ICEServers; ice != nil {
		b = append(b[:len(b)-1], `,"iceServers":`...)
		b = append(ice(b, s.name), '}')
	}
	return b
}

// countLogin counts a login attempt; past -max-logins it answers the
// login, closes the connection and returns false.
func (c *conn) countLogin() bool {
	c.logins++
	if c.logins <= c.e.cfg.MaxLogins {
		return true
	}
	limit := strconv.Itoa(c.e.cfg.MaxLogins)
	c.loginRefused(reasonLoginAttempts, "too many login attempts (limit "+limit+" per connection, -max-logins)")
	c.closeWith(closeLimit("login attempts limit (" + limit + ") exceeded"))
	return false
}

// loginRefused answers a login that cannot succeed, counting r.
func (c *conn) loginRefused(r reason, why string) {
	c.e.stats.errors[r].Add(1)
	c.e.stats.logins[loginInvalid].Add(1)
	c.loginReply(false, why)
}

// loginReply sends {"type":"login","success":B,"message":why}.
func (c *conn) loginReply(ok bool, why string) {
	b := protocol.AppendLogin(nil, ok)
	if why != "" {
		b = append(b[:len(b)-1], `,"message":`...)
		b = append(protocol.AppendString(b, []byte(why)), '}')
	}
	c.enqueue(ws.OpText, b)
}
