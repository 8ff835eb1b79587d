package edge

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
)

// Frames in from NATS: the user and room subscriptions deliver to the
// dispatchers' channels (one goroutine per CPU, a session always on the
// same one, so its frames stay in order), which hand each frame to its
// session (session.deliver): to the socket, or kept, or refused.

// dispatch delivers the messages on msgs until the channel is closed
// (Shutdown, after every subscription that feeds it is gone). It never
// blocks on a socket: enqueue is bounded and non-blocking.
func (e *Edge) dispatch(msgs <-chan *nats.Msg) {
	defer e.dispWG.Done()
	for m := range msgs {
		e.deliver(m)
	}
}

// deliver hands one message of a user or room subscription to its
// session(s).
func (e *Edge) deliver(m *nats.Msg) {
	if m.Sub == nil {
		// A mark (resume.go): every message queued before it is delivered.
		if done, ok := e.marks.LoadAndDelete(m); ok {
			close(done.(chan struct{}))
		}
		return
	}
	if s := e.sessions.bySubscription(m.Sub); s != nil {
		if sent := m.Header[subject.HeaderSent]; len(sent) == 1 {
			if ns, err := strconv.ParseInt(sent[0], 10, 64); err == nil {
				e.stats.latency.Observe(time.Duration(time.Now().UnixNano() - ns).Seconds())
			}
		}
		s.deliver(frameOf(m), false)
		return
	}
	if r := e.rooms.bySubscription(m.Sub); r != nil {
		r.deliver(frameOf(m))
		return
	}
	// Not (or no longer) subscribed here: the session ended.
	e.stats.dropped[dropEnded].Add(1)
	e.refuse(frameOf(m))
}

// mark returns once the dispatcher ch has delivered everything queued in it
// before now, or the edge is stopping.
func (e *Edge) mark(ch chan *nats.Msg) {
	m := &nats.Msg{}
	done := make(chan struct{})
	e.marks.Store(m, done)
	select {
	case ch <- m:
	case <-e.stop:
		e.marks.Delete(m)
		return
	}
	select {
	case <-done:
	case <-e.stop:
	}
}

// refuse tells the sender of a relayed frame that the target is not online,
// because its edge could not keep the frame: the sender's edge hears it on
// its refusal subject (with the frame's reply subject, which names the
// connection and the target) and turns it into an error frame (onRefused).
func (e *Edge) refuse(f keptFrame) {
	if f.reply == "" || f.edge == "" || !strings.HasPrefix(f.reply, "_INBOX.") {
		return
	}
	_ = e.nc.Publish(subject.EdgeRefused(f.edge), []byte(f.reply))
}

// onReply turns NATS's "no responders" status for a relayed frame into an
// error frame for its sender.
func (e *Edge) onReply(m *nats.Msg) {
	if m.Header.Get("Status") == "503" {
		e.notOnline(m.Subject)
	}
}

// reportLost tells the sender's edge that n frames its connection sent to
// this session, on the route of f, before f, never arrived here: they were
// lost in transit (a NATS server that died with them in its buffers).
func (e *Edge) reportLost(f keptFrame, n uint64) {
	e.stats.lostInTransit.Add(n)
	if f.reply == "" || f.edge == "" || !strings.HasPrefix(f.reply, "_INBOX.") {
		return
	}
	m := nats.Msg{Subject: subject.EdgeRefused(f.edge), Data: []byte(f.reply),
		Header: nats.Header{subject.HeaderLost: {strconv.FormatUint(n, 10)}}}
	_ = e.nc.PublishMsg(&m)
}

// onRefused turns a refusal by a target's edge, or its report of frames
// lost in transit (HeaderLost), into an error frame for the sender of the
// frame.
func (e *Edge) onRefused(m *nats.Msg) {
	c, tok, name := e.senderOf(string(m.Data))
	if c == nil {
		return
	}
	if v := m.Header.Get(subject.HeaderLost); v != "" {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil && n > 0 {
			c.lostInTransit(name, n)
		}
		return
	}
	c.notOnline(tok, name, false)
}

// notOnline tells the connection that sent the frame whose reply subject
// is reply that its target is not online. The peer stays in the
// connection's peer set: the target may be gone for good (its edge died)
// and its release then sends leave.
func (e *Edge) notOnline(reply string) {
	if c, tok, name := e.senderOf(reply); c != nil {
		c.notOnline(tok, name, false)
	}
}

// senderOf returns the connection that sent the frame whose reply subject
// is reply, and its target's token and name; c is nil when that
// connection is gone (or reply is not one of this edge's).
func (e *Edge) senderOf(reply string) (c *conn, tok, name string) {
	rest, ok := strings.CutPrefix(reply, e.nrPrefix)
	if !ok {
		return nil, "", ""
	}
	idStr, tok, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, "", ""
	}
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		return nil, "", ""
	}
	name, err = names.Decode(tok)
	if err != nil {
		return nil, "", ""
	}
	return e.conns.get(id), tok, name
}

// onAsyncError is the NATS connection's error handler while the edge runs
// (it calls the one it replaced too). A subscription whose dispatcher
// channel was full lost frames inside nats.go, which cannot say whose: the
// loss is counted, and a session that lost frames ends (1011), so that its
// peers get leave rather than a call that silently misses its candidates.
func (e *Edge) onAsyncError(prev nats.ErrHandler) nats.ErrHandler {
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil && errors.Is(err, nats.ErrSlowConsumer) {
			e.slowConsumer(sub)
		}
		if prev != nil {
			prev(nc, sub, err)
		}
	}
}

func (e *Edge) slowConsumer(sub *nats.Subscription) {
	n, _ := sub.Dropped()
	e.stats.dropped[dropDispatch].Add(uint64(max(n, 1)))
	e.stats.errors[reasonDispatchFull].Add(1)
	s := e.sessions.bySubscription(sub)
	if s == nil {
		e.log.Warn("room frames lost: the edge's delivery queue was full", "subject", sub.Subject)
		return
	}
	e.log.Warn("frames for a session lost: the edge's delivery queue was full; closing it", "subject", sub.Subject)
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.fail(closeOverloaded)
	}
}
