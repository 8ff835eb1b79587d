package edge

import (
	"errors"
	"sync"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/services/protocol"
)

// Messages of the error frames the edge sends. Where the tutorial's server
// stays silent (a target that is not online, a message before login) this
// one says why.
const (
	errNotLoggedIn   = "not logged in: send login first"
	errNoTarget      = `missing "name": the user to send to`
	errBusDown       = "signaling is unavailable (no connection to NATS); try again"
	errInvalidTarget = "invalid name: "
	errPaused        = "signaling is unavailable (this edge is checking its sessions after a pause); try again"
)

// framePool holds parsed frames: a Frame carries parser scratch space that
// an idle connection should not hold.
var framePool = sync.Pool{New: func() any { return new(protocol.Frame) }}

// message handles one complete client message; false ends the read loop.
func (c *conn) message(op ws.OpCode, data []byte) bool {
	ok, _ := c.handleMessage(op, data, false)
	return ok
}

// handleMessage is message. With inline set (the caller is the poller's
// goroutine, which must not wait), a message whose handling waits on the
// registry or the buckets (waits) is checked and parsed (the rate limit
// counts it) but not handled: deferred is true, and deferredMessage
// handles it, on a goroutine that may wait.
func (c *conn) handleMessage(op ws.OpCode, data []byte, inline bool) (ok, deferred bool) {
	if c.revoked.Load() {
		return true, false // closing: its name is gone, it speaks for nobody
	}
	if op == ws.OpBinary {
		data = nil // never a login
	}
	if drop, ok := c.limited(data); drop {
		return ok, false
	}
	if op == ws.OpBinary {
		c.sendError(reasonBinary, "binary frames are not supported: send JSON text frames")
		return true, false
	}
	if !utf8.Valid(data) {
		c.fail(closeInvalidUTF8)
		return false, false
	}
	f := framePool.Get().(*protocol.Frame)
	defer framePool.Put(f)
	if err := protocol.Parse(data, f); err != nil {
		switch {
		case errors.Is(err, protocol.ErrInvalidJSON):
			c.sendError(reasonInvalidJSON, "Invalid JSON")
		case errors.Is(err, protocol.ErrNotObject):
			c.sendError(reasonBadFrame, "Invalid message: not a JSON object")
		case errors.Is(err, protocol.ErrMissingType):
			c.sendError(reasonBadFrame, "Command not found: missing type")
		default:
			c.sendError(reasonBadFrame, "Command not found: type is not a string")
		}
		return true, false
	}
	if c.e.suspect.Load() || c.e.paused() {
		// The edge was frozen: its names may be someone else's now. Until
		// its heartbeat has checked every session, nothing counts (and a
		// login gets its reply).
		if f.Type == protocol.TypeLogin {
			if c.countLogin() {
				c.loginRefused(reasonBusDown, errPaused)
			}
		} else {
			c.sendError(reasonBusDown, errPaused)
		}
		return true, false
	}
	if inline && waits(f.Type) {
		return true, true
	}
	return c.handle(f, data), false
}

// waits reports whether handling a message of type t waits on the
// registry or the buckets: logins, joins, parts and watches.
func waits(t protocol.Type) bool {
	switch t {
	case protocol.TypeLogin, protocol.TypeJoin, protocol.TypePart, protocol.TypeWatch:
		return true
	}
	return false
}

// deferredMessage handles a message that handleMessage deferred; its
// checks were made then, and its bytes parsed.
func (c *conn) deferredMessage(data []byte) bool {
	if c.revoked.Load() {
		return true
	}
	f := framePool.Get().(*protocol.Frame)
	defer framePool.Put(f)
	if protocol.Parse(data, f) != nil {
		return true // not reached: it parsed before
	}
	return c.handle(f, data)
}

// handle acts on a parsed client message; false ends the read loop.
func (c *conn) handle(f *protocol.Frame, data []byte) bool {
	switch f.Type {
	case protocol.TypeLogin:
		c.login(f, data)
		return true
	case protocol.TypeUnknown:
		c.sendError(reasonBadFrame, "Command not found: "+string(f.RawType))
		return true
	}
	s := c.sess
	if s == nil {
		c.sendError(reasonNotLoggedIn, errNotLoggedIn)
		return true
	}
	switch f.Type {
	case protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave:
		c.relay(s, f)
	case protocol.TypeMessage:
		if f.HasRoom {
			c.roomMessage(s, f)
		} else {
			c.relay(s, f)
		}
	case protocol.TypeJoin:
		c.join(s, f)
	case protocol.TypePart:
		c.part(s, f)
	case protocol.TypeWatch:
		c.watch(s, f, true)
	case protocol.TypeUnwatch:
		c.watch(s, f, false)
	}
	return true
}

// sendError queues an error frame for this client.
func (c *conn) sendError(r reason, msg string) {
	c.e.stats.errors[r].Add(1)
	c.enqueue(ws.OpText, protocol.AppendError(nil, msg))
}
