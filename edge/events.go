package edge

import (
	"time"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
)

// The edge's lifecycle events: call_start when an answer is relayed, and
// call_end when a call ends (leave, or an end of either side, told by the
// edge that sends the leave). They are core NATS publishes into the stream
// SIGNAL_EVENTS (package events): nothing waits for them, and one published
// while NATS is away is lost. Those of relayed frames (call_start, and
// call_end for a leave) are encoded on the relay's path (callevents.go).

func (e *Edge) callEnd(name, token, peer, reason string) {
	e.event(token, events.Event{Kind: events.KindCallEnd, Name: name, Peer: peerName(peer), Reason: reason})
}

func (e *Edge) event(token string, ev events.Event) {
	if e.cfg.NoCallEvents {
		return
	}
	ev.Edge = e.cfg.ID
	ev.Time = time.Now().UTC()
	_ = e.nc.PublishMsg(events.Msg(ev, token, ""))
}

func peerName(tok string) string {
	n, _ := names.Decode(tok)
	return n
}
