package edge

import (
	"bytes"
	"io"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Reading WebSocket frames from a client: one frame at a time, a message
// assembled from its fragments in a pooled buffer, control frames answered
// here, every complete message handed to message (dispatch.go).

// frameScratch is the space readFrame needs for a frame header and a
// control payload; it comes with the reader (pooled for polled sockets), so
// that an idle connection does not carry it.
type frameScratch struct {
	hdr [ws.MaxHeaderSize]byte
	ctl [125]byte
}

// readBufs holds the buffers messages are assembled in.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readFrame reads one frame from r and acts on it. A message in fragments
// is assembled across calls. It returns false when the connection is done.
func (c *conn) readFrame(r io.Reader, s *frameScratch) bool {
	h, err := ws.ReadHeaderBuffer(r, s.hdr[:])
	if err != nil {
		return false
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.pinged.Store(false)
	if h.Rsv != 0 || !h.Masked {
		c.fail(closeProtocol)
		return false
	}
	if h.OpCode.IsControl() {
		if !h.Fin || h.Length > int64(len(s.ctl)) {
			c.fail(closeProtocol)
			return false
		}
		p := s.ctl[:h.Length]
		if _, err := io.ReadFull(r, p); err != nil {
			return false
		}
		ws.Cipher(p, h.Mask, 0)
		return c.control(h.OpCode, p)
	}
	switch h.OpCode {
	case ws.OpContinuation:
		if c.msg == nil {
			c.fail(closeProtocol)
			return false
		}
	case ws.OpText, ws.OpBinary:
		if c.msg != nil {
			c.fail(closeProtocol)
			return false
		}
		c.op = h.OpCode
		c.msg = readBufs.Get().(*[]byte)
		*c.msg = (*c.msg)[:0]
	default:
		c.fail(closeProtocol)
		return false
	}
	msg := c.msg
	if int64(len(*msg))+h.Length > int64(c.e.cfg.MaxFrameSize) {
		c.fail(closeTooBig)
		return false
	}
	start := len(*msg)
	if *msg, err = readPayload(r, *msg, int(h.Length)); err != nil {
		return false
	}
	ws.Cipher((*msg)[start:], h.Mask, 0)
	if !h.Fin {
		return true
	}
	c.msg = nil
	ok := c.message(c.op, *msg)
	readBufs.Put(msg)
	return ok
}

// readPayload appends n bytes from r to b, growing b as the bytes arrive
// rather than trusting the length the peer declared.
func readPayload(r io.Reader, b []byte, n int) ([]byte, error) {
	for n > 0 {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		chunk := min(n, cap(b)-len(b))
		k, err := io.ReadFull(r, b[len(b):len(b)+chunk])
		b = b[:len(b)+k]
		n -= k
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// control handles a control frame; false ends the read loop.
func (c *conn) control(op ws.OpCode, p []byte) bool {
	switch op {
	case ws.OpPing:
		// Pings count against the rate like messages, and their pongs
		// against the write queue, so a ping flood costs only its sender.
		if drop, ok := c.limited(); drop {
			return ok
		}
		c.enqueue(ws.OpPong, bytes.Clone(p))
		return true
	case ws.OpPong:
		return true
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 1:
			c.fail(closeProtocol)
			return false
		case len(p) == 0:
			c.closeWith(closeNormal)
		case ws.CheckCloseFrameData(code, reason) != nil:
			c.closeWith(closeProtocol)
		default:
			c.closeWith(closeReason{code: code})
		}
		return false
	default:
		c.fail(closeProtocol)
		return false
	}
}

// message handles one complete client message; false ends the read loop.
