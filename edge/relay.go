package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
)

// Relaying a client's frame to its target: the frame the target receives is
// built here (the sender stamped from the session, never from the client's
// JSON) and published to "user.<token>" with a reply subject, on which NATS
// answers at once with "no responders" when nobody subscribes it, and the
// target's edge refuses a frame it cannot keep (deliver.go, onReply).

// routeCache is how many recent targets a connection keeps subjects for: a
// mesh call of a few members sends to each in turn.
const routeCache = 8

// sender is what a connection needs to publish: its NATS headers and the
// route cache. It is made on the connection's first relayed message, so
// that a logged-in user who only waits for calls holds none of it (the
// headers alone are a map of four slices, some 500 bytes).
type sender struct {
	hdr     nats.Header
	sent    []string // the value slice of hdr's send time
	sentBuf [20]byte // its bytes
	seq     []string // the value slice of hdr's sequence
	seqBuf  []byte   // its bytes: "<session>:" and the number
	track   []string // the value slice of hdr's route track (HeaderTrack)
	trkBuf  [41]byte // its bytes

	routes [routeCache]route
	next   int // the entry to replace next

	startSubj, endSubj string // the subjects of its call events, made on first use

	direct  []byte // the static part of the headers of a direct publish (direct.go)
	viaNats bool   // its last publish went through nats.go's buffer
}

// route is one cached target: its subjects, made once, and how many
// frames went out on it (HeaderTrack: the target's edge sees one missing).
type route struct {
	target string
	token  string
	subj   string
	reply  string
	first  uint64 // the Signal-Seq number of its first frame
	sent   uint64 // frames published on it
}

// sender returns c's publishing state for s, making it on first use.
func (c *conn) sender(s *session) *sender {
	if c.snd == nil {
		p := &sender{sent: []string{""}, seq: []string{""}, track: []string{""}}
		p.seqBuf = append(make([]byte, 0, len(s.id)+21), s.id...)
		p.seqBuf = append(p.seqBuf, ':')
		p.hdr = nats.Header{
			subject.HeaderFrom: {s.token}, subject.HeaderEdge: {c.e.cfg.ID},
			subject.HeaderSent: p.sent, subject.HeaderSeq: p.seq,
			subject.HeaderTrack: p.track,
		}
		c.snd = p
	}
	return c.snd
}

// stamp sets the send time, the session's next sequence number and r's
// track in the headers. The header values alias the sender's buffers:
// nats.go encodes the headers inside PublishMsg, before the buffers are
// written again, so no string is allocated per message. The frame counts
// on r once it is published (r.sent); a frame to a room has no route (r
// nil, the track empty).
func (p *sender) stamp(s *session, r *route) {
	b := strconv.AppendInt(p.sentBuf[:0], time.Now().UnixNano(), 10)
	p.sent[0] = unsafe.String(unsafe.SliceData(b), len(b))
	n := len(s.id) + 1
	seq := s.seq.Add(1)
	p.seqBuf = strconv.AppendUint(p.seqBuf[:n], seq, 10)
	p.seq[0] = unsafe.String(unsafe.SliceData(p.seqBuf), len(p.seqBuf))
	if r == nil {
		p.track[0] = ""
		return
	}
	if r.sent == 0 {
		r.first = seq
	}
	t := strconv.AppendUint(p.trkBuf[:0], r.first, 10)
	t = append(t, ':')
	t = strconv.AppendUint(t, r.sent+1, 10)
	p.track[0] = unsafe.String(unsafe.SliceData(t), len(t))
}

// route returns the cached route to target, making it (and checking that
// target is online, in the background) when it is new.
func (c *conn) route(p *sender, target []byte) *route {
	for i := range p.routes {
		if r := &p.routes[i]; r.subj != "" && r.target == string(target) {
			return r
		}
	}
	r := &p.routes[p.next]
	p.next = (p.next + 1) % routeCache
	tok := names.Token(string(target))
	*r = route{
		target: string(target),
		token:  tok,
		subj:   subject.User(tok),
		reply:  c.e.nrPrefix + strconv.FormatUint(c.id, 10) + "." + tok,
	}
	c.e.checkOnline(c, tok, r.target)
	return r
}

// relay sends an offer, answer, candidate, leave or app message to its
// target. The sender is s's name, never anything the client wrote.
func (c *conn) relay(s *session, f *protocol.Frame) {
	if !f.NameIsString {
		c.sendError(reasonBadTarget, errNoTarget)
		return
	}
	if err := names.CheckBytes(f.Name); err != nil {
		c.sendError(reasonBadTarget, errInvalidTarget+err.Error())
		return
	}
	bp := readBufs.Get().(*[]byte)
	out, ok := c.build(s, f, (*bp)[:0])
	if ok {
		c.publish(s, f, out)
	}
	if cap(out) <= 64<<10 {
		*bp = out[:0]
		readBufs.Put(bp)
	}
}

// build appends the frame the target receives for f to out; false when f
// is refused (the client has been told why).
func (c *conn) build(s *session, f *protocol.Frame, out []byte) ([]byte, bool) {
	switch f.Type {
	case protocol.TypeOffer:
		if f.Payload == nil {
			c.sendError(reasonMissingPayload, `missing "offer"`)
			return out, false
		}
		return protocol.AppendOffer(out, f.Payload, s.nameBytes()), true
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
			c.sendError(reasonCandidateLimit, "too many candidates for this call (limit "+strconv.Itoa(c.e.cfg.MaxCandidates)+", -max-candidates): dropped")
			return out, false
		}
		return protocol.AppendCandidate(out, f.Payload), true
	case protocol.TypeMessage:
		if f.Payload == nil {
			c.sendError(reasonMissingPayload, `missing "data"`)
			return out, false
		}
		return protocol.AppendMessage(out, s.nameBytes(), f.Payload), true
	default: // protocol.TypeLeave
		return protocol.AppendLeave(out), true
	}
}

// publish sends out, built from f, to f's target.
func (c *conn) publish(s *session, f *protocol.Frame, out []byte) {
	e := c.e
	if !c.natsUp() {
		c.sendError(reasonBusDown, errBusDown)
		return
	}
	p := c.sender(s)
	r := c.route(p, f.Name)
	inCall := false // a leave ends a call only with a peer
	switch f.Type {
	case protocol.TypeOffer, protocol.TypeAnswer:
		c.cands = 0
		s.addPeer(r.token)
	case protocol.TypeLeave:
		inCall = s.removePeer(r.token)
	}
	p.stamp(s, r)
	if !c.publishDirect(p, r.subj, r.reply, out, true) {
		pub := nats.Msg{Subject: r.subj, Reply: r.reply, Header: p.hdr, Data: out}
		if err := e.nc.PublishMsg(&pub); err != nil {
			c.sendError(reasonBusDown, errBusDown)
			return
		}
		p.viaNats = true
	}
	r.sent++
	e.stats.relayed[f.Type].Add(1)
	switch f.Type {
	case protocol.TypeAnswer:
		c.callEvent(p, s, r, events.KindCallStart, "")
	case protocol.TypeLeave:
		if inCall {
			c.callEvent(p, s, r, events.KindCallEnd, events.ReasonLeave)
		}
	}
}

// notOnline tells c that the user named name is not online. NATS's "no
// responders", or a refusal by the target's edge, is told every time (each
// is one frame lost); the users-bucket check (byCheck) only when neither
// told it in the last second, and they are not told again within a second
// of it: both may report the same frame, in either order.
func (c *conn) notOnline(tok, name string, byCheck bool) {
	now := time.Now().UnixNano()
	c.nomu.Lock()
	if c.told == nil {
		c.told = new([4]told)
	}
	oldest := 0
	for i, n := range c.told {
		if n.tok == tok && now-n.at < int64(time.Second) && (byCheck || n.byCheck) {
			c.told[i].byCheck = false // one duplicate suppressed; the next is news
			c.nomu.Unlock()
			return
		}
		if n.at < c.told[oldest].at {
			oldest = i
		}
	}
	c.told[oldest] = told{tok: tok, at: now, byCheck: byCheck}
	c.nomu.Unlock()
	c.sendError(reasonNotOnline, `user "`+name+`" is not online`)
}

// lostInTransit tells c that n frames it sent to the user named name never
// reached that user's edge (a NATS server died with them in its buffers):
// a client that cares sends them again.
func (c *conn) lostInTransit(name string, n uint64) {
	msg := strconv.FormatUint(n, 10) + " messages to \"" + name + "\" were lost in transit (a NATS server failed); send them again"
	if n == 1 {
		msg = "1 message to \"" + name + "\" was lost in transit (a NATS server failed); send it again"
	}
	c.sendError(reasonLostInTransit, msg)
}

// told is a "not online" told to a client, for notOnline.
type told struct {
	tok     string
	at      int64
	byCheck bool
}

// checkOnline looks a new target up in the users bucket, in the background,
// and tells c when it was not online when the frame was sent (at sent).
// NATS's "no responders" tells that at once by itself, but an operator's
// "nats sub 'user.>'" counts as a responder too. The lookups in flight are
// bounded; beyond the bound a target is not checked.
func (e *Edge) checkOnline(c *conn, tok, name string) {
	select {
	case e.checks <- struct{}{}:
	default:
		return
	}
	sent := time.Now()
	e.stats.checks.Add(1)
	if !e.tryBG(func() {
		defer func() { <-e.checks }()
		ctx, cancel := e.reqCtx()
		defer cancel()
		// The last message of the name's key: none, or a release before
		// the frame went out, means the name was not online; a release
		// after it says nothing about the frame.
		op, at, _, found, err := e.lastUserMsg(ctx, tok)
		switch {
		case err != nil:
			return
		case found && (op == "" || !at.Before(sent)):
			return
		}
		c.notOnline(tok, name, true)
	}) {
		<-e.checks
	}
}

// lastUserMsg reads the last message of tok's key in the users bucket
// from the stream's leader: its KV-Operation header ("" for a value), time
// and sequence (the entry's revision); found false when the key has none.
// Not a direct get, which any replica may answer: one that lags (just
// after a failover of the stream's leader) would say a name that is online
// is not.
func (e *Edge) lastUserMsg(ctx context.Context, tok string) (op string, at time.Time, seq uint64, found bool, err error) {
	req, _ := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{"$KV." + subject.UsersBucket + "." + tok})
	m, err := e.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+subject.UsersBucket, req)
	if err != nil {
		return "", time.Time{}, 0, false, err
	}
	var rep struct {
		Message *struct {
			Header []byte    `json:"hdrs"`
			Time   time.Time `json:"time"`
			Seq    uint64    `json:"seq"`
		} `json:"message"`
		Error *struct {
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return "", time.Time{}, 0, false, err
	}
	switch {
	case rep.Error != nil && rep.Error.ErrCode == errCodeNoMessage:
		return "", time.Time{}, 0, false, nil
	case rep.Error != nil:
		return "", time.Time{}, 0, false, errors.New(rep.Error.Desc)
	case rep.Message == nil:
		return "", time.Time{}, 0, false, errors.New("stream message get: empty reply")
	}
	if len(rep.Message.Header) > 0 {
		if i := bytes.Index(rep.Message.Header, []byte("KV-Operation:")); i >= 0 {
			v := rep.Message.Header[i+len("KV-Operation:"):]
			if j := bytes.IndexByte(v, '\r'); j >= 0 {
				v = v[:j]
			}
			op = string(bytes.TrimSpace(v))
		}
	}
	return op, rep.Message.Time, rep.Message.Seq, true, nil
}

// errCodeNoMessage is JetStream's error code for "no message found".
const errCodeNoMessage = 10037

// usersKV returns the users bucket, or nil while it does not exist yet (the
// registry creates it).
func (e *Edge) usersKV() jetstream.KeyValue {
	e.kvMu.Lock()
	kv := e.kv
	e.kvMu.Unlock()
	if kv != nil {
		return kv
	}
	// Not under the lock: callers must not queue behind a network call
	// while the bucket does not exist yet.
	ctx, cancel := e.reqCtx()
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
