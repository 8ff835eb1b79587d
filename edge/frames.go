package edge

import (
	"bytes"
	"encoding/binary"
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
// It is the reader of connections the poller does not watch (serve); a
// polled socket's bytes go through frames instead.
func (c *conn) readFrame(r io.Reader, s *frameScratch) bool {
	h, err := ws.ReadHeaderBuffer(r, s.hdr[:])
	if err != nil {
		return false
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.pinged.Store(false)
	if !c.checkHeader(h) {
		return false
	}
	if h.OpCode.IsControl() {
		p := s.ctl[:h.Length]
		if _, err := io.ReadFull(r, p); err != nil {
			return false
		}
		ws.Cipher(p, h.Mask, 0)
		return c.control(h.OpCode, p)
	}
	if h.OpCode != ws.OpContinuation {
		c.op = h.OpCode
		c.msg = readBufs.Get().(*[]byte)
		*c.msg = (*c.msg)[:0]
	}
	msg := c.msg
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

// checkHeader makes the checks a frame header allows before its payload is
// read: reserved bits, masking, opcodes, fragments in order, control
// frames whole and small, the message size limit (from the declared
// length: a frame too big is refused before its bytes arrive). False when
// the connection is done; the client has been sent a close frame.
func (c *conn) checkHeader(h ws.Header) bool {
	if h.Rsv != 0 || !h.Masked {
		c.fail(closeProtocol)
		return false
	}
	if h.OpCode.IsControl() {
		if !h.Fin || h.Length > int64(len(frameScratch{}.ctl)) {
			c.fail(closeProtocol)
			return false
		}
		return true
	}
	var have int
	switch h.OpCode {
	case ws.OpContinuation:
		if c.msg == nil {
			c.fail(closeProtocol)
			return false
		}
		have = len(*c.msg)
	case ws.OpText, ws.OpBinary:
		if c.msg != nil {
			c.fail(closeProtocol)
			return false
		}
	default:
		c.fail(closeProtocol)
		return false
	}
	if int64(have)+h.Length > int64(c.e.cfg.MaxFrameSize) {
		c.fail(closeTooBig)
		return false
	}
	return true
}

// headerAt parses the frame header at the start of b, as
// ws.ReadHeaderBuffer does from a reader. n is the header's length, or 0
// when b does not hold all of it yet.
func headerAt(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	n = 2
	if b[1]&0x80 != 0 {
		n += 4
	}
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if len(b) < n {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	i := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		i = 4
	case 127:
		if b[2]&0x80 != 0 {
			return h, 0, ws.ErrHeaderLengthMSB
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:10]))
		i = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	return h, n, nil
}

// scan is how frames stopped.
type scan uint8

const (
	// scanMore: every whole frame was handled; what is left (nothing, or
	// the start of a frame) needs more bytes.
	scanMore scan = iota
	// scanEnded: the connection is done (a close frame, a protocol error).
	scanEnded
	// scanDeferred: a message whose handling waits (handleMessage) was
	// not handled; it is returned, and the bytes after it are left.
	scanDeferred
)

// frames handles the whole frames at the start of b, which holds bytes
// read from c's socket: the same checks and actions as readFrame, with the
// payload unmasked in place and a message in one frame handled straight
// from b (b is the caller's, and nothing keeps a message's bytes after
// handling it). n is how many bytes it used. With inline set (the caller
// must not wait: the poller's goroutine) a message whose handling waits
// on the registry stops it: scanDeferred, with the message's bytes in a
// pooled buffer that the caller puts back in readBufs (a deferred message
// is text: binary ones are answered at once).
func (c *conn) frames(b []byte, inline bool) (n int, st scan, deferred *[]byte) {
	// The poller's goroutine publishes through its batch (direct.go).
	c.direct = inline && c.e.poll != nil && c.e.poll.tap != nil
	defer func() { c.direct = false }()
	for n < len(b) {
		h, hl, err := headerAt(b[n:])
		if err != nil {
			return n, scanEnded, nil
		}
		if hl == 0 {
			return n, scanMore, nil
		}
		if !c.checkHeader(h) {
			return n, scanEnded, nil
		}
		end := n + hl + int(h.Length)
		if end > len(b) || end < n {
			return n, scanMore, nil
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.pinged.Store(false)
		p := b[n+hl : end]
		ws.Cipher(p, h.Mask, 0)
		n = end
		if h.OpCode.IsControl() {
			if !c.control(h.OpCode, p) {
				return n, scanEnded, nil
			}
			continue
		}
		if h.OpCode != ws.OpContinuation && h.Fin {
			// A message in one frame, the common case: no copy.
			ok, def := c.handleMessage(h.OpCode, p, inline)
			if def {
				m := readBufs.Get().(*[]byte)
				*m = append((*m)[:0], p...)
				return n, scanDeferred, m
			}
			if !ok {
				return n, scanEnded, nil
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			c.op = h.OpCode
			c.msg = readBufs.Get().(*[]byte)
			*c.msg = (*c.msg)[:0]
		}
		*c.msg = append(*c.msg, p...)
		if !h.Fin {
			continue
		}
		msg := c.msg
		c.msg = nil
		ok, def := c.handleMessage(c.op, *msg, inline)
		if def {
			return n, scanDeferred, msg
		}
		readBufs.Put(msg)
		if !ok {
			return n, scanEnded, nil
		}
	}
	return n, scanMore, nil
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
		if drop, ok := c.limited(nil); drop {
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
