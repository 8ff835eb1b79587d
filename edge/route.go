package edge

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
)

// Messages of the error frames the edge sends. Where the tutorial's server
// stays silent (a target that is not online, a message before login) this
// one says why.
const (
	errNotLoggedIn   = "not logged in: send login first"
	errNoTarget      = `missing "name": the user to send to`
	errBusDown       = "signaling is unavailable (no connection to NATS); try again"
	errLoginFailed   = "login failed: the registry did not answer; try again"
	errInvalidTarget = "invalid name: "
)

// loginExtras are the login fields beyond the tutorial's.
type loginExtras struct {
	// Resume is the resume token of an earlier session with this name.
	Resume string `json:"resume"`
}

// login claims f.Name for this connection through the registry. A login
// that carries the resume token of the session holding the name takes it
// over.
func (c *conn) login(f *protocol.Frame, data []byte) {
	if c.sub != nil {
		c.sendError(reasonAlreadyLoggedIn, `already logged in as "`+c.name+`"`)
		return
	}
	c.logins++
	if c.logins > c.e.cfg.MaxLogins {
		c.sendError(reasonLoginAttempts, "too many login attempts")
		c.fail(closeAbuse)
		return
	}
	if !f.NameIsString {
		c.loginRefused("missing name")
		return
	}
	if err := names.CheckBytes(f.Name); err != nil {
		c.loginRefused("invalid name: " + err.Error())
		return
	}
	e := c.e
	if c.authName != "" && string(f.Name) != c.authName {
		e.stats.errors[reasonNameMismatch].Add(1)
		c.loginRefused("name does not match your token")
		return
	}
	if !e.nc.IsConnected() {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	name := string(f.Name)
	token := names.Token(name)
	session := randomID(16)
	resume := randomID(32)
	var extras loginExtras
	_ = json.Unmarshal(data, &extras) // a non-string resume is no resume

	// Subscribe before asking the registry: the request travels behind the
	// SUB on the same connection, so once the registry has answered, the
	// server routes user.<token> here without a Flush round trip. Until
	// the name is ours, bySub has no entry and deliveries are dropped.
	sub, err := e.nc.ChanSubscribe(subject.User(token), e.msgs[c.id%uint64(len(e.msgs))])
	if err != nil {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	e.mu.Lock()
	e.pending[sub] = c
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.pending, sub)
		e.mu.Unlock()
	}()
	req, _ := json.Marshal(registry.LoginRequest{
		Name: name, Edge: e.cfg.ID, Instance: e.instance, Session: session,
		ResumeHash: registry.HashToken(resume), Resume: extras.Resume,
	})
	resp, err := e.nc.Request(subject.RegistryLogin, req, e.cfg.RegistryTimeout)
	var rep registry.LoginReply
	if err == nil {
		if code := resp.Header.Get(microErrorHeader); code != "" {
			err = errors.New(resp.Header.Get(microErrorDescHeader))
		} else {
			err = json.Unmarshal(resp.Data, &rep)
		}
	}
	if err != nil || !rep.OK {
		_ = sub.Unsubscribe()
		switch {
		case err == nil && rep.Reason == registry.ReasonBadToken:
			c.loginRefused(rep.Reason)
		case err == nil:
			e.stats.logins[loginTaken].Add(1)
			c.enqueue(ws.OpText, protocol.AppendLogin(nil, false))
		case errors.Is(err, nats.ErrTimeout):
			e.stats.logins[loginError].Add(1)
			// The registry may have created the entry and its answer got
			// lost: release it, or the name would stay taken.
			e.queueLogout(logoutJob{name: name, session: session})
			c.sendError(reasonLoginFailed, errLoginFailed)
		default:
			e.stats.logins[loginError].Add(1)
			e.log.Warn("login failed", "err", err)
			c.sendError(reasonLoginFailed, errLoginFailed)
		}
		return
	}
	c.name, c.token, c.session, c.sub, c.rev = name, token, session, sub, rep.Revision
	c.snd = nil // its headers name the previous login, if any
	e.mu.Lock()
	e.bySub[sub] = c
	e.bySes[session] = c
	e.mu.Unlock()
	e.stats.users.Add(1)
	if rep.Resumed {
		e.stats.logins[loginResumed].Add(1)
	} else {
		e.stats.logins[loginOK].Add(1)
	}
	// {"type":"login","success":true,"resume":"<token>"[,"resumed":true]}:
	// extra fields, which tutorial clients ignore.
	b := protocol.AppendLoginExtra(nil, true, "resume", protocol.AppendString(nil, []byte(resume)))
	if rep.Resumed {
		b = append(b[:len(b)-1], `,"resumed":true}`...)
	}
	if e.cfg.ICEServers != nil {
		b = append(b[:len(b)-1], `,"iceServers":`...)
		b = append(e.cfg.ICEServers(b, name), '}')
	}
	c.enqueue(ws.OpText, b)
}

// Headers a micro service sets on an error reply.
const (
	microErrorHeader     = "Nats-Service-Error-Code"
	microErrorDescHeader = "Nats-Service-Error"
)

// loginRefused answers a login that cannot succeed with success false and a
// message that says why (an extra field tutorial clients ignore).
func (c *conn) loginRefused(why string) {
	c.e.stats.logins[loginInvalid].Add(1)
	b := protocol.AppendLogin(nil, false)
	b = b[:len(b)-1]
	b = append(b, `,"message":`...)
	b = protocol.AppendString(b, []byte(why))
	b = append(b, '}')
	c.enqueue(ws.OpText, b)
}

// relay sends an offer, answer, candidate or leave to its target. The sender
// is this connection's name, never anything the client wrote.
func (c *conn) relay(f *protocol.Frame) {
	if c.sub == nil {
		c.sendError(reasonNotLoggedIn, errNotLoggedIn)
		return
	}
	if !f.NameIsString {
		c.sendError(reasonBadTarget, errNoTarget)
		return
	}
	if err := names.CheckBytes(f.Name); err != nil {
		c.sendError(reasonBadTarget, errInvalidTarget+err.Error())
		return
	}
	bp := readBufs.Get().(*[]byte)
	out, ok := c.build(f, (*bp)[:0])
	if ok {
		c.publish(f, out)
	}
	if cap(out) <= 64<<10 {
		*bp = out[:0]
		readBufs.Put(bp)
	}
}

// build appends the frame the target receives for f to out; false when f
// is refused (the client has been told why).
func (c *conn) build(f *protocol.Frame, out []byte) ([]byte, bool) {
	switch f.Type {
	case protocol.TypeOffer:
		if f.Payload == nil {
			c.sendError(reasonMissingPayload, `missing "offer"`)
			return out, false
		}
		return protocol.AppendOffer(out, f.Payload, unsafe.Slice(unsafe.StringData(c.name), len(c.name))), true
	case protocol.TypeAnswer:
		if f.Payload == nil {
			c.sendError(reasonMissingPayload, `missing "answer"`)
			return out, false
		}
		return protocol.AppendAnswer(out, f.Payload), true
	case protocol.TypeCandidate:
		if f.Payload == nil {
			c.sendError(reasonMissingPayload, `missing "candidate"`)
			return out, false
		}
		if c.cands++; c.cands > c.e.cfg.MaxCandidates {
			c.sendError(reasonCandidateLimit, "too many candidates for this call: dropped")
			return out, false
		}
		return protocol.AppendCandidate(out, f.Payload), true
	default: // protocol.TypeLeave
		return protocol.AppendLeave(out), true
	}
}

// publish sends out, built from f, to f's target.
func (c *conn) publish(f *protocol.Frame, out []byte) {
	e := c.e
	if !e.nc.IsConnected() {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	s := c.sender()
	if !c.route(s, f.Name) {
		c.sendError(reasonNotOnline, `user "`+string(f.Name)+`" is not online`)
		return
	}
	switch f.Type {
	case protocol.TypeOffer, protocol.TypeAnswer:
		c.cands = 0
		e.setPeer(c, s.token)
	case protocol.TypeLeave:
		e.clearPeer(c, s.token)
	}
	// The send time, for the receiving edge's latency histogram. The
	// header value aliases s.sentBuf: nats.go encodes the header inside
	// PublishMsg, before the buffer is written again, so no string is
	// allocated per message.
	b := strconv.AppendInt(s.sentBuf[:0], time.Now().UnixNano(), 10)
	s.sent[0] = unsafe.String(unsafe.SliceData(b), len(b))
	pub := nats.Msg{Subject: s.subj, Reply: s.reply, Header: s.hdr, Data: out}
	if err := e.nc.PublishMsg(&pub); err != nil {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	e.stats.relayed[f.Type].Add(1)
}

// sender returns c's publishing state, making it on first use.
func (c *conn) sender() *sender {
	if c.snd == nil {
		s := &sender{sent: []string{""}}
		s.hdr = nats.Header{subject.HeaderFrom: {c.token}, subject.HeaderEdge: {c.e.cfg.ID}, subject.HeaderSent: s.sent}
		c.snd = s
	}
	return c.snd
}

// route points the route cache at target; false means the target is not
// online. The reply subject of every relayed frame makes NATS answer at once
// with "no responders" when nobody subscribes the target's subject, that is,
// when the target is not online anywhere (onNoResponders). But an operator's
// "nats sub 'user.>'" counts as a responder too, so a new target is also
// looked up in the users bucket once, when the cache changes to it.
func (c *conn) route(s *sender, target []byte) bool {
	if string(target) == s.target && s.subj != "" {
		return true
	}
	tok := names.Token(string(target))
	if !c.e.online(tok) {
		return false
	}
	s.target = string(target)
	s.token = tok
	s.subj = subject.User(tok)
	s.reply = c.e.nrPrefix + strconv.FormatUint(c.id, 10) + "." + tok
	return true
}

// online looks tok up in the users bucket. It answers true when it cannot
// tell (no bucket yet, NATS trouble): the publish then finds out.
func (e *Edge) online(tok string) bool {
	kv := e.usersKV()
	if kv == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RegistryTimeout)
	defer cancel()
	_, err := kv.Get(ctx, tok)
	return !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted)
}

// usersKV returns the users bucket, or nil while it does not exist yet (the
// registry creates it).
func (e *Edge) usersKV() jetstream.KeyValue {
	e.kvMu.Lock()
	kv := e.kv
	e.kvMu.Unlock()
	if kv != nil {
		return kv
	}
	// Not under the lock: connections must not queue behind a network
	// call while the bucket does not exist yet.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RegistryTimeout)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, subject.UsersBucket)
	if err != nil {
		return nil
	}
	e.kvMu.Lock()
	e.kv = kv
	e.kvMu.Unlock()
	return kv
}

// onNoResponders turns NATS's "no responders" status for a relayed frame
// into an error frame for its sender.
func (e *Edge) onNoResponders(m *nats.Msg) {
	if m.Header.Get("Status") != "503" {
		return
	}
	rest := strings.TrimPrefix(m.Subject, e.nrPrefix)
	idStr, tok, ok := strings.Cut(rest, ".")
	if !ok {
		return
	}
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		return
	}
	name, err := names.Decode(tok)
	if err != nil {
		return
	}
	e.mu.RLock()
	c := e.byID[id]
	e.mu.RUnlock()
	if c == nil {
		return
	}
	e.mu.Lock()
	if c.peer == tok {
		e.unlinkPeer(c)
	}
	e.mu.Unlock()
	c.sendError(reasonNotOnline, `user "`+name+`" is not online`)
}

// dispatch delivers the messages of the user subscriptions on msgs to their
// sockets. It never blocks on a socket: enqueue is bounded and non-blocking.
func (e *Edge) dispatch(msgs <-chan *nats.Msg) {
	for m := range msgs {
		e.deliver(m)
	}
}

// deliver hands one message of a user subscription to its socket.
func (e *Edge) deliver(m *nats.Msg) {
	e.mu.RLock()
	c := e.bySub[m.Sub]
	if c == nil && len(m.Data) == 0 {
		c = e.pending[m.Sub] // a control message may beat the login reply
	}
	e.mu.RUnlock()
	if c == nil {
		return // not (or no longer) logged in
	}
	if ctl := m.Header[subject.HeaderControl]; len(ctl) > 0 {
		if ctl[0] == subject.ControlPeer {
			if p := m.Header.Get(subject.HeaderPeer); names.ValidToken(p) {
				e.setPeer(c, p)
			}
		}
		return
	}
	if sent := m.Header[subject.HeaderSent]; len(sent) == 1 {
		if ns, err := strconv.ParseInt(sent[0], 10, 64); err == nil {
			e.stats.latency.Observe(time.Duration(time.Now().UnixNano() - ns).Seconds())
		}
	}
	if from := m.Header[subject.HeaderFrom]; len(from) == 1 {
		switch protocol.FrameType(m.Data) {
		case protocol.TypeOffer, protocol.TypeAnswer:
			e.setPeer(c, from[0])
		case protocol.TypeLeave:
			e.clearPeer(c, from[0])
		}
	}
	c.enqueue(ws.OpText, m.Data)
}

// setPeer records tok as the peer of c: the user who gets leave when c goes.
func (e *Edge) setPeer(c *conn, tok string) {
	e.mu.RLock()
	same := c.peer == tok
	e.mu.RUnlock()
	if same {
		return
	}
	e.mu.Lock()
	if c.gone {
		e.mu.Unlock()
		return
	}
	e.unlinkPeer(c)
	c.peer = tok
	set := e.peers[tok]
	if set == nil {
		set = make(map[*conn]struct{}, 1)
		e.peers[tok] = set
	}
	set[c] = struct{}{}
	e.mu.Unlock()
}

// clearPeer forgets c's peer if it is tok.
func (e *Edge) clearPeer(c *conn, tok string) {
	e.mu.Lock()
	if c.peer == tok {
		e.unlinkPeer(c)
	}
	e.mu.Unlock()
}

// unlinkPeer removes c from the peer index. e.mu must be held for writing.
func (e *Edge) unlinkPeer(c *conn) {
	if c.peer == "" {
		return
	}
	if set := e.peers[c.peer]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(e.peers, c.peer)
		}
	}
	c.peer = ""
}

// onOffline handles a name the registry released without a goodbye from its
// connection (its edge's lease lapsed): every local user whose peer it was
// gets leave. If the name is held here, this edge was cut off for longer
// than its lease and the name may have a new owner: that connection is
// closed, so that a name never has two.
func (e *Edge) onOffline(m *nats.Msg) {
	tok := strings.TrimPrefix(m.Subject, subject.PresenceOfflinePrefix)
	var off registry.Offline
	_ = json.Unmarshal(m.Data, &off)
	if off.Reason == registry.ReasonResumed {
		e.handOver(tok, off.Session)
		return
	}
	e.mu.Lock()
	set := e.peers[tok]
	delete(e.peers, tok)
	conns := make([]*conn, 0, len(set))
	for c := range set {
		c.peer = ""
		conns = append(conns, c)
	}
	holder := e.bySes[off.Session]
	e.mu.Unlock()
	for _, c := range conns {
		c.enqueue(ws.OpText, protocol.AppendLeave(nil))
	}
	if holder != nil && holder.token == tok {
		e.log.Warn("registry released a name held here (lease lapsed); closing its connection", "conn", holder.id)
		e.revoke(holder, closeNameLost)
	}
}

// logout releases this connection's name: no more deliveries, the registry
// entry, then leave to the peer. A connection that dropped (no close frame
// either way) keeps its name for ResumeGrace, so that its client can resume
// with its token; a connection taken over by a resume releases nothing.
func (c *conn) logout() {
	e := c.e
	// Whether the session is held for a resume is decided under the same
	// lock under which handOver looks for it, so that a resume finds
	// either the connection or its held session, never neither.
	e.mu.Lock()
	c.gone = true
	delete(e.bySub, c.sub)
	delete(e.bySes, c.session)
	peer := c.peer
	e.unlinkPeer(c)
	resumed := c.resumed.Load()
	held := !resumed && !c.deliberate.Load() && e.cfg.ResumeGrace > 0 && !e.closing.Load()
	if held {
		e.holdLocked(c.job(), peer, c.leaveHdr())
	}
	e.mu.Unlock()
	_ = c.sub.Unsubscribe()
	e.stats.users.Add(-1)
	if !resumed && !held {
		e.release(c.job(), peer, c.leaveHdr())
	}
}

// release gives the name back to the registry and, if it was still ours,
// tells the peer. The name goes first, so that a peer that reacts to leave
// by calling the name again finds it free.
func (e *Edge) release(j logoutJob, peer string, hdr nats.Header) {
	owned, err := e.logout(j)
	if err != nil {
		e.log.Debug("logout failed; retrying in the background", "err", err)
		e.queueLogout(j)
		owned = true
	}
	if peer != "" && owned {
		msg := nats.Msg{Subject: subject.User(peer), Header: hdr, Data: protocol.AppendLeave(nil)}
		_ = e.nc.PublishMsg(&msg)
	}
}

// holdLocked keeps a dropped session's name for ResumeGrace, then releases
// it unless the client resumed meanwhile (then handOver has removed it).
// e.mu must be held.
func (e *Edge) holdLocked(j logoutJob, peer string, hdr nats.Header) {
	if e.held == nil {
		e.held = make(map[string]*heldSession)
	}
	h := &heldSession{job: j, peer: peer, hdr: hdr}
	h.timer = time.AfterFunc(e.cfg.ResumeGrace, func() {
		e.mu.Lock()
		_, ok := e.held[j.session]
		delete(e.held, j.session)
		e.mu.Unlock()
		if ok {
			e.release(j, peer, hdr)
		}
	})
	e.held[j.session] = h
}

type heldSession struct {
	job   logoutJob
	peer  string
	hdr   nats.Header
	timer *time.Timer
}

// handOver ends a session here that its client resumed elsewhere: a stale
// connection still open is closed (4002), a held one forgotten, and the
// peer passes to the new session, so that its close still sends leave.
func (e *Edge) handOver(tok, session string) {
	var peer string
	e.mu.Lock()
	stale := e.bySes[session]
	if stale != nil && stale.token == tok {
		peer = stale.peer
		stale.resumed.Store(true)
	} else {
		stale = nil
		if h := e.held[session]; h != nil {
			h.timer.Stop()
			delete(e.held, session)
			peer = h.peer
		}
	}
	e.mu.Unlock()
	if stale != nil {
		e.revoke(stale, closeResumed)
	}
	if peer != "" {
		msg := nats.Msg{Subject: subject.User(tok), Header: nats.Header{
			subject.HeaderControl: {subject.ControlPeer},
			subject.HeaderPeer:    {peer},
			subject.HeaderEdge:    {e.cfg.ID},
		}}
		_ = e.nc.PublishMsg(&msg)
	}
}

// revoke ends a session whose name is no longer its own: no more
// deliveries, nothing it sends counts, and it is closed with cr. Its logout
// releases nothing and tells no peer.
func (e *Edge) revoke(c *conn, cr closeReason) {
	c.revoked.Store(true)
	c.resumed.Store(true)
	e.mu.Lock()
	delete(e.bySub, c.sub)
	e.mu.Unlock()
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
	c.closeWith(cr)
}

// releaseHeld releases every held session now (at shutdown).
func (e *Edge) releaseHeld() {
	e.mu.Lock()
	held := e.held
	e.held = nil
	e.mu.Unlock()
	for _, h := range held {
		// A timer that fired but waits for e.mu finds its entry gone and
		// does nothing: release it here whatever Stop says.
		h.timer.Stop()
		e.release(h.job, h.peer, h.hdr)
	}
}

// logoutJob identifies a session's entry for registry.logout.
type logoutJob struct {
	name, session string
	rev           uint64 // the entry's revision, when known
}

// leaveHdr is the header of the leave sent for c after it ends: who sent it,
// without a send time (that is stamped per relayed frame).
func (c *conn) leaveHdr() nats.Header {
	return nats.Header{subject.HeaderFrom: {c.token}, subject.HeaderEdge: {c.e.cfg.ID}}
}

// job is the logout of c's session.
func (c *conn) job() logoutJob { return logoutJob{name: c.name, session: c.session, rev: c.rev} }

// logout asks the registry to release a session's name if it still owns
// it; owned reports whether it did.
func (e *Edge) logout(j logoutJob) (owned bool, err error) {
	req, _ := json.Marshal(registry.LogoutRequest{Name: j.name, Session: j.session, Revision: j.rev})
	resp, err := e.nc.Request(subject.RegistryLogout, req, e.cfg.RegistryTimeout)
	if err != nil {
		return false, err
	}
	if resp.Header.Get(microErrorHeader) != "" {
		return false, errors.New(resp.Header.Get(microErrorDescHeader))
	}
	var rep registry.LogoutReply
	if err := json.Unmarshal(resp.Data, &rep); err != nil {
		return false, err
	}
	return rep.OK, nil
}

// queueLogout hands a failed logout to the retrier. The list is unbounded
// on purpose: each entry is a name that would otherwise stay taken while
// this edge lives. It grows only while the registry cannot be reached, by
// at most one entry per connection that ended (or login that timed out)
// meanwhile.
func (e *Edge) queueLogout(j logoutJob) {
	e.retryMu.Lock()
	e.retry = append(e.retry, j)
	e.retryMu.Unlock()
}

// logoutRetrier retries failed logouts until they succeed, so that a name is
// not left taken by a connection that is gone while its edge lives on.
func (e *Edge) logoutRetrier() {
	defer e.bgWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		final := false
		select {
		case <-t.C:
		case <-e.stopBG:
			final = true
		}
		e.retryMu.Lock()
		pending := e.retry
		e.retry = nil
		e.retryMu.Unlock()
		var kept []logoutJob
		for i, j := range pending {
			if !e.nc.IsConnected() && !final {
				kept = append(kept, pending[i:]...)
				break
			}
			if _, err := e.logout(j); err != nil && !final {
				kept = append(kept, j)
			}
		}
		if len(kept) > 0 {
			e.retryMu.Lock()
			e.retry = append(kept, e.retry...)
			e.retryMu.Unlock()
		}
		if final {
			return
		}
	}
}
