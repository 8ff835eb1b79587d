package edge

import (
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/events"
)

// The call events of relayed frames (call_start for every answer, call_end
// for a leave) are on the relay's path: they are encoded here by appending
// to a pooled buffer, byte for byte as events.Msg encodes them with
// encoding/json (TestCallEventJSON holds the two together), and published
// to a subject the connection made once. encoding/json's reflection, the
// time's formatting through MarshalJSON and the message's allocations cost
// more than the rest of an answer's relay did.

// callEvent publishes the call event kind (events.KindCallStart or
// KindCallEnd, with reason) of s for the relay through route r.
func (c *conn) callEvent(p *sender, s *session, r *route, kind, reason string) {
	if c.e.cfg.NoCallEvents {
		return
	}
	subj := &p.startSubj
	if kind == events.KindCallEnd {
		subj = &p.endSubj
	}
	if *subj == "" {
		*subj = events.Subject(kind, s.token)
	}
	bp := readBufs.Get().(*[]byte)
	b := appendCallEvent((*bp)[:0], kind, s.name, c.e.cfg.ID, time.Now().UTC(), reason, r.target)
	if !c.publishDirect(p, *subj, "", b, false) {
		pub := nats.Msg{Subject: *subj, Data: b}
		_ = c.e.nc.PublishMsg(&pub)
		p.viaNats = true
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		readBufs.Put(bp)
	}
}

// appendCallEvent appends the JSON of events.Event{Kind: kind, Name: name,
// Edge: edge, Time: t, Reason: reason, Peer: peer} as encoding/json writes
// it.
func appendCallEvent(b []byte, kind, name, edge string, t time.Time, reason, peer string) []byte {
	b = append(b, `{"kind":`...)
	b = appendJSONString(b, kind)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, name)
	b = append(b, `,"edge":`...)
	b = appendJSONString(b, edge)
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, reason)
	}
	if peer != "" {
		b = append(b, `,"peer":`...)
		b = appendJSONString(b, peer)
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json writes a string (with its
// default HTML escaping): '"' and '\\' escaped, \b \f \n \r \t by name, the
// other control characters and '<', '>', '&' as \u00XX, U+2028 and U+2029
// as \u2028 and \u2029, each invalid UTF-8 byte as \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
