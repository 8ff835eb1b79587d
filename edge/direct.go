package edge

import (
	"strconv"

	"github.com/natsrtc/signal/services/subject"
)

// Publishing from the poller's goroutine without nats.go's buffer: when
// the edge's NATS connection has a natsconn.Tap, the relays (and their
// call events) that the poller handles go, as HPUB and PUB ops, into the
// poller's batch, which is written to the connection in one call when
// the poller has served every socket epoll reported, or sooner when the
// poller lets a socket go (to a goroutine, a timer or its end: whatever
// that goroutine publishes through nats.go comes after). No wake-up of
// nats.go's flusher goroutine, one write for many messages.
//
// Order: a connection's relays to one user are published in the order
// they are read. A connection whose last publish went through nats.go
// (its reader was a goroutine: a login, a join, a frame in pieces)
// publishes directly again only once nats.go's buffer is empty: what it
// published there has been written, and the next goes after it.

// maxBatch bounds the poller's batch: a bigger one is written at once.
const maxBatch = 32 << 10

// publishDirect adds a publish of data to subj (with reply; with the
// sender's frame headers when headers is set) to the poller's batch, or
// returns false: the caller publishes through nats.go.
func (c *conn) publishDirect(p *sender, subj, reply string, data []byte, headers bool) bool {
	e := c.e
	if !c.direct || !e.poll.tap.Direct() {
		return false
	}
	if p.viaNats {
		if n, err := e.nc.Buffered(); err != nil || n > 0 {
			return false
		}
		p.viaNats = false
	}
	b := e.poll.batch
	if headers {
		if p.direct == nil {
			p.direct = p.directHeaders(c)
		}
		sent, seq, track := p.sent[0], p.seq[0], p.track[0]
		hlen := len(p.direct) + len(sent) + len(hdrSeq) + len(seq) + len(hdrTrack) + len(track) + len("\r\n\r\n")
		if int64(hlen+len(data)) > e.maxPayload() {
			e.poll.flushBatch() // nats.go refuses it; in order if it did not
			return false
		}
		b = append(b, "HPUB "...)
		b = append(b, subj...)
		b = append(b, ' ')
		if reply != "" {
			b = append(b, reply...)
			b = append(b, ' ')
		}
		b = strconv.AppendInt(b, int64(hlen), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(hlen+len(data)), 10)
		b = append(b, "\r\n"...)
		b = append(b, p.direct...)
		b = append(b, sent...)
		b = append(b, hdrSeq...)
		b = append(b, seq...)
		b = append(b, hdrTrack...)
		b = append(b, track...)
		b = append(b, "\r\n\r\n"...)
	} else {
		if int64(len(data)) > e.maxPayload() {
			e.poll.flushBatch()
			return false
		}
		b = append(b, "PUB "...)
		b = append(b, subj...)
		b = append(b, ' ')
		if reply != "" {
			b = append(b, reply...)
			b = append(b, ' ')
		}
		b = strconv.AppendInt(b, int64(len(data)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, data...)
	b = append(b, "\r\n"...)
	e.poll.batch = b
	if n := len(e.poll.senders); n == 0 || e.poll.senders[n-1] != c {
		e.poll.senders = append(e.poll.senders, c)
	}
	if len(b) >= maxBatch {
		e.poll.flushBatch()
	}
	return true
}

// hdrSeq is the header between the send time and the sequence number,
// hdrTrack the one between that and the route's track.
const (
	hdrSeq   = "\r\n" + subject.HeaderSeq + ": "
	hdrTrack = "\r\n" + subject.HeaderTrack + ": "
)

// directHeaders is the static start of a direct publish's headers, up to
// the send time's value.
func (p *sender) directHeaders(c *conn) []byte {
	b := append([]byte(nil), "NATS/1.0\r\n"...)
	b = append(b, subject.HeaderFrom+": "...)
	b = append(b, p.hdr[subject.HeaderFrom][0]...)
	b = append(b, "\r\n"+subject.HeaderEdge+": "...)
	b = append(b, c.e.cfg.ID...)
	b = append(b, "\r\n"+subject.HeaderSent+": "...)
	return b
}

// maxPayload is the server's limit on a message (headers and payload), as
// the server of the tap's current connection said it (read again after a
// reconnect: another server may have another limit).
func (e *Edge) maxPayload() int64 {
	if g := e.poll.tap.Gen(); e.poll.maxPay == 0 || e.poll.maxGen != g {
		e.poll.maxPay, e.poll.maxGen = e.nc.MaxPayload(), g
	}
	return e.poll.maxPay
}

// flushBatch writes the poller's batch. On the poller's goroutine only.
func (p *poller) flushBatch() {
	if len(p.batch) == 0 {
		return
	}
	if err := p.tap.WriteDirect(p.e.nc, p.batch); err != nil {
		// The connection went away meanwhile: what the batch held is
		// lost (as a nats.go buffer that did not reach the server is),
		// and its senders hear that signaling was unavailable.
		for _, c := range p.senders {
			c.sendError(reasonBusDown, errBusDown)
		}
	}
	clear(p.senders)
	p.senders = p.senders[:0]
	if cap(p.batch) > 4*maxBatch {
		p.batch = nil
	} else {
		p.batch = p.batch[:0]
	}
}

// flushDirect writes the poller's batch when c is served on the poller's
// goroutine: a publish through nats.go that follows goes after it.
func (c *conn) flushDirect() {
	if c.direct {
		c.e.poll.flushBatch()
	}
}

// natsUp reports whether the edge's NATS connection is up, for a relay. On
// the poller's goroutine with a tap that can write, the tap's own state
// says it without nats.go's lock, which nats.go holds through a reconnect's
// dial and handshake (the poller would stop every socket meanwhile).
func (c *conn) natsUp() bool {
	e := c.e
	if c.direct && e.poll.tap.Direct() {
		return true
	}
	return e.nc.IsConnected()
}
