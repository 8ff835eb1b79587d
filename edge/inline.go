package edge

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/subject"
)

// Frames for a session straight from the NATS connection's read path:
// when the edge's connection has a natsconn.Tap (Connect puts one on every
// connection without TLS), the goroutine that reads the connection hands
// each frame on a user's subject to its session itself (take), as the
// dispatcher would (deliver): no nats.go message, payload copy or decoded
// headers, no hand-over to a dispatcher goroutine. What it does not take
// reaches nats.go and the dispatchers as before:
//
//   - a frame for a token that two sessions of this edge subscribe (a
//     resume on the same edge): nats.go tells them apart by subscription;
//     such a session stays on the dispatchers for good (shared);
//   - a frame for a session that is neither pending, live nor moving
//     (held, handing over, ended): delivering it may mean refusing it,
//     which publishes, and the read path must not wait on the connection
//     it reads; the session stays on the dispatchers for good too;
//   - everything that is not a user's frame (rooms, replies, presence,
//     the registry's answers).
//
// Order: a session is registered before its subscription is made (so its
// first frame already comes this way) and removed before it is
// unsubscribed, under the index's lock, which the read path holds while
// it delivers: once unsubscribe has returned, no frame for the session is
// being delivered here, and the ones after it went to nats.go, whose
// dispatcher the hand-over's mark drains (resume.go). A session that
// moves to the dispatchers moves once, after the frames delivered here.
type inlineIndex struct {
	once sync.Once
	on   bool // a tap takes frames for this edge
	mu   sync.RWMutex
	by   map[string]*inlineEntry // token -> the sessions subscribing it (a list: one, as a rule)
}

type inlineEntry struct {
	s         *session
	next      *inlineEntry // another session subscribing the token
	dispensed atomic.Bool  // the dispatchers deliver its frames (shared, or no longer live)
}

// attach sets e's taker on its connection's tap, once.
func (x *inlineIndex) attach(e *Edge) {
	x.once.Do(func() {
		t := natsconn.TapOf(e.nc)
		x.on = t != nil && t.SetTaker(e.take)
	})
}

// detach removes e's taker from its connection's tap (Shutdown, after
// every session is gone): the connection may outlive the edge, and another
// edge on it may take the frames of its own users.
func (x *inlineIndex) detach(e *Edge) {
	x.once.Do(func() {}) // never attach from now on (and take nothing now)
	if !x.on {
		return
	}
	if t := natsconn.TapOf(e.nc); t != nil {
		t.ClearTaker()
	}
}

// add registers s, before its subscription is made.
func (x *inlineIndex) add(s *session) {
	x.attach(s.e)
	if !x.on {
		return
	}
	x.mu.Lock()
	if x.by == nil {
		x.by = make(map[string]*inlineEntry)
	}
	en := &inlineEntry{s: s, next: x.by[s.token]}
	for other := en.next; other != nil; other = other.next {
		other.dispensed.Store(true)
		en.dispensed.Store(true)
	}
	x.by[s.token] = en
	x.mu.Unlock()
}

// remove forgets s, before it is unsubscribed; once it returns, no frame
// for s is being delivered by the read path.
func (x *inlineIndex) remove(s *session) {
	x.attach(s.e)
	if !x.on {
		return
	}
	x.mu.Lock()
	for p := x.by[s.token]; p != nil; p = p.next {
		if p.s == s {
			x.unlink(s.token, p)
			break
		}
	}
	x.mu.Unlock()
}

// unlink removes en from tok's list; x.mu is held.
func (x *inlineIndex) unlink(tok string, en *inlineEntry) {
	head := x.by[tok]
	if head == en {
		if en.next == nil {
			delete(x.by, tok)
		} else {
			x.by[tok] = en.next
		}
		return
	}
	for p := head; p.next != nil; p = p.next {
		if p.next == en {
			p.next = en.next
			return
		}
	}
}

// take is the edge's natsconn.Taker: a frame on a user's subject, on the
// read path; true when it delivered it.
func (e *Edge) take(subj, reply, header, data []byte) bool {
	tok := subj[len(subject.UserPrefix):]
	x := &e.inline
	x.mu.RLock()
	defer x.mu.RUnlock()
	en := x.by[string(tok)]
	if en == nil || en.next != nil || en.dispensed.Load() {
		return false
	}
	if data == nil {
		// Too big for the tap: it goes to nats.go, and so, behind it,
		// does every later frame of the session.
		en.dispensed.Store(true)
		return false
	}
	s := en.s
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	switch st {
	case sesPending, sesLive, sesMoving:
	default:
		en.dispensed.Store(true) // from now on the dispatchers deliver its frames
		return false
	}
	var h frameHdr
	if len(header) > 0 {
		var ok bool
		if h, ok = frameHeaders(header); !ok {
			// nats.go reports what it cannot read; its dispatcher has
			// the session's frames from now on, so that they stay in
			// order behind this one.
			en.dispensed.Store(true)
			return false
		}
	}
	if len(h.sent) > 0 {
		if ns, err := strconv.ParseInt(string(h.sent), 10, 64); err == nil {
			e.stats.latency.Observe(time.Duration(time.Now().UnixNano() - ns).Seconds())
		}
	}
	s.deliver(keepFrame(data, reply, h), false)
	return true
}

// frameHdr holds the first values of a frame's headers (HeaderSeq,
// HeaderFrom, HeaderEdge, HeaderSent, HeaderTrack), pointing into the
// header block.
type frameHdr struct{ seq, from, edge, sent, track []byte }

// keepFrame copies what a frame carries into one allocation that the
// session may keep (queued, held, tracked, or written later).
func keepFrame(data, reply []byte, h frameHdr) keptFrame {
	b := make([]byte, 0, len(data)+len(h.seq)+len(h.from)+len(h.edge)+len(reply))
	b = append(b, data...)
	i := len(data)
	f := keptFrame{data: b[:i:i]}
	str := func(v []byte) string {
		if len(v) == 0 {
			return ""
		}
		b = append(b, v...)
		i += len(v)
		return unsafe.String(&b[i-len(v)], len(v))
	}
	f.seq = str(h.seq)
	f.from = str(h.from)
	f.edge = str(h.edge)
	f.reply = str(reply)
	if len(h.track) > 0 {
		f.track, _ = parseTrack(h.track)
	}
	return f
}

// frameHeaders finds the first values of the frame headers in a NATS
// header block ("NATS/1.0\r\n" then "Key: value\r\n" lines and a blank
// line), as nats.go reads them (keys as they are, the value's leading
// blanks dropped); ok is false for a block nats.go would not take as it is
// (malformed, or with a status).
func frameHeaders(b []byte) (h frameHdr, ok bool) {
	line, rest, found := cutLine(b)
	if !found || !bytes.Equal(line, []byte("NATS/1.0")) {
		return frameHdr{}, false
	}
	for {
		line, rest, found = cutLine(rest)
		if !found {
			return frameHdr{}, false
		}
		if len(line) == 0 {
			return h, true
		}
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return frameHdr{}, false
		}
		key, v := line[:i], line[i+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		var into *[]byte
		switch string(key) {
		case subject.HeaderSeq:
			into = &h.seq
		case subject.HeaderFrom:
			into = &h.from
		case subject.HeaderEdge:
			into = &h.edge
		case subject.HeaderSent:
			into = &h.sent
		case subject.HeaderTrack:
			into = &h.track
		}
		if into != nil && *into == nil {
			*into = v[:len(v):len(v)]
		}
	}
}

// cutLine cuts b at its first '\n', dropping a '\r' before it.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}
