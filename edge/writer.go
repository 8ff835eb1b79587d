package edge

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Writing to a client: frames are written at once from the goroutine that
// has them when nothing is waiting and the kernel takes them; the rest waits
// in a bounded queue that a writer goroutine drains while there is
// something to write. Close frames, the lingering close and cutting the
// socket are here too.

// closeReason is a close frame the edge sends: the codes are data, in one
// table, so that clients and tests can rely on them.
type closeReason struct {
	code   ws.StatusCode
	reason string
}

var (
	closeNormal      = closeReason{ws.StatusNormalClosure, ""}
	closeGoingAway   = closeReason{ws.StatusGoingAway, "edge shutting down"}
	closeProtocol    = closeReason{ws.StatusProtocolError, "protocol error"}
	closeInvalidUTF8 = closeReason{ws.StatusInvalidFramePayloadData, "invalid UTF-8"}
	closeTooBig      = closeReason{ws.StatusMessageTooBig, "frame too big"}
	closeInternal    = closeReason{ws.StatusInternalServerError, "internal error"}
	// closeOverloaded: frames for the client were lost (the edge's
	// delivery queue was full); its session ends, so its peers hear.
	closeOverloaded = closeReason{ws.StatusInternalServerError, "edge overloaded: frames for you were lost"}
	// closeNameLost: the registry released the name (the edge was cut off
	// longer than its lease); log in again.
	closeNameLost = closeReason{ws.StatusCode(4001), "name released; log in again"}
	// closeFenced: the edge lost its lease (cut off from the registry's
	// buckets); log in again, elsewhere if need be.
	closeFenced = closeReason{ws.StatusCode(4001), "edge cut off from the registry; log in again"}
	// closeResumed: the client resumed this session on another connection.
	closeResumed = closeReason{ws.StatusCode(4002), "session resumed elsewhere"}
	// closeKicked: an admin kicked the session (registry.kick); the error
	// frame before it carries the admin's reason.
	closeKicked = closeReason{ws.StatusCode(4003), "kicked"}
)

// Policy closes (1008) name the limit that tripped.
func closeLimit(reason string) closeReason { return closeReason{ws.StatusPolicyViolation, reason} }

type outFrame struct {
	op   ws.OpCode
	raw  bool // data is the unwritten rest of a frame, header included
	data []byte
}

// enqueue queues a frame for the socket without blocking. A data frame that
// finds the queue full disconnects the client: one that does not read must
// not hold memory or anyone else. It reports whether the frame was queued.
func (c *conn) enqueue(op ws.OpCode, data []byte) bool { return c.enqueueKept(op, data, nil) }

// enqueueKept is enqueue for a frame of a resumable session (kf): the
// connection remembers it until the client's TCP stack has acknowledged it
// (tracking), so that a connection that drops gives back what it did not
// deliver.
func (c *conn) enqueueKept(op ws.OpCode, data []byte, kf *keptFrame) bool {
	c.wmu.Lock()
	if c.closeSent || c.done {
		c.wmu.Unlock()
		return false
	}
	if op != ws.OpClose && (len(c.queue) >= c.e.cfg.WriteQueue || c.queued+len(data) > c.e.cfg.WriteQueueBytes) {
		c.wmu.Unlock()
		c.e.stats.errors[reasonSlowClient].Add(1)
		c.e.log.Debug("write queue full; disconnecting client", "conn", c.id)
		c.abort()
		return false
	}
	// Where this frame ends in the byte stream to the client: frames are
	// written in the order they are accepted here.
	c.streamOff += uint64(frameHeaderLen(len(data)) + len(data))
	if op == ws.OpText {
		c.texts++
	}
	if c.track != nil && kf != nil {
		c.track.add(*kf, c.streamOff, c.texts, c.e.cfg.ResumeFrames, c.e.cfg.ResumeBytes)
	}
	if op == ws.OpClose {
		c.closeSent = true
	} else if !c.writing && c.raw != nil {
		// Nothing queued and nobody writing: try the socket from this
		// goroutine. A frame the kernel takes at once, the common case,
		// then costs no goroutine and no hand-over (the relay's latency,
		// and a ping round's memory when thousands of sockets are pinged
		// together); what it does not take goes to the writer.
		c.writing = true
		c.wmu.Unlock()
		rest, err := c.writeNow(op, data)
		c.wmu.Lock()
		if err != nil {
			c.writeFailed()
			return true
		}
		if rest != nil {
			// The rest of this frame goes before what was queued meanwhile.
			c.queue = append(c.queue, outFrame{})
			copy(c.queue[1:], c.queue)
			c.queue[0] = outFrame{raw: true, data: rest}
			c.queued += len(rest)
		}
		if len(c.queue) > 0 {
			go c.writeLoop()
		} else {
			c.writing = false
			if c.done {
				go c.lingerClose()
			}
		}
		c.wmu.Unlock()
		return true
	}
	c.queue = append(c.queue, outFrame{op: op, data: data})
	c.queued += len(data)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.wmu.Unlock()
	return true
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeLoop writes queued frames, coalescing what is queued into one write,
// until the queue is empty; then it exits. It closes the socket after a
// close frame the client asked for, or once the read loop has ended.
func (c *conn) writeLoop() {
	var batch []outFrame
	for {
		c.wmu.Lock()
		if len(c.queue) == 0 {
			// The deadline was for this loop's writes: the direct writes
			// that follow (writeNow) must not find it passed.
			_ = c.nc.SetWriteDeadline(time.Time{})
			c.writing = false
			done := c.done
			if cap(c.queue) > 16 {
				c.queue = nil // do not keep a burst's memory on an idle socket
			}
			c.wmu.Unlock()
			if done {
				c.lingerClose()
			}
			return
		}
		batch, c.queue, c.spare = c.queue, c.spare[:0], nil
		c.queued = 0
		c.wmu.Unlock()

		bp := writeBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		var sentClose bool
		for i, f := range batch {
			if !f.raw {
				buf = appendFrameHeader(buf, f.op, len(f.data))
			}
			buf = append(buf, f.data...)
			sentClose = sentClose || f.op == ws.OpClose
			batch[i] = outFrame{}
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
		_, err := c.nc.Write(buf)
		if cap(buf) <= 64<<10 {
			*bp = buf[:0]
			writeBufs.Put(bp)
		}
		c.wmu.Lock()
		if cap(batch) <= 16 {
			c.spare = batch[:0]
		}
		c.wmu.Unlock()
		if err != nil {
			c.wmu.Lock()
			c.writeFailed()
			return
		}
		if sentClose {
			// After our close frame the reader waits for the client's, for
			// CloseTimeout at most; after echoing the client's, the reader
			// has already ended and done is set: the loop above closes.
			time.AfterFunc(c.e.cfg.CloseTimeout, c.kill)
		}
	}
}

// writeFailed ends the writing after a failed write; c.wmu is held and is
// released. Nothing more is sent. If the reader has already ended, it left
// closing the socket to the writer; otherwise the socket is cut so that the
// reader ends (and closes it).
func (c *conn) writeFailed() {
	c.writing = false
	c.closeSent = true
	c.queue = nil
	done := c.done
	c.wmu.Unlock()
	if done {
		_ = c.nc.Close()
		return
	}
	c.kill()
}

// Lingering close: how long, and how many bytes, lingerClose reads.
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// lingerClose closes the socket once everything for the client is written.
// It ends our side first (FIN behind the last frame), then reads and drops
// what the client still sends, until it closes too, for lingerTime and
// lingerBytes at most. Closing a socket with unread bytes resets the
// connection, and a reset can make the client's kernel drop what it has not
// read yet: the close frame and the error frame that explain why (a flooder
// closed with 1008 always has unread bytes).
func (c *conn) lingerClose() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		_ = tc.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, tc, lingerBytes)
	}
	_ = c.nc.Close()
}

// frameHeaderLen is the length of an unmasked server frame header for a
// payload of n bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// appendFrameHeader appends an unmasked server frame header.
func appendFrameHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// closeWith queues a close frame. The read loop keeps reading until the
// client answers with its own close frame or CloseTimeout passes.
func (c *conn) closeWith(cr closeReason) {
	c.deliberate.Store(true)
	var body []byte
	if cr.code != 0 {
		body = ws.NewCloseFrameBody(cr.code, cr.reason)
	}
	c.enqueue(ws.OpClose, body)
}

// fail sends a close frame for a protocol violation; the read loop ends and
// the socket closes once the frame is written.
func (c *conn) fail(cr closeReason) {
	c.e.stats.errors[closeReasonOf(cr)].Add(1)
	c.closeWith(cr)
}

// abort ends the connection at once, without a close handshake.
func (c *conn) abort() {
	c.wmu.Lock()
	c.closeSent = true
	c.wmu.Unlock()
	c.kill()
}

// kill cuts the socket so that its reader, wherever it is, sees the end and
// tears the connection down (which closes it): a reading goroutine wakes
// from its deadline; a polled socket becomes readable (end of stream) once
// shut down. Closing it here would not do: a closed socket leaves the
// poller without an event.
func (c *conn) kill() {
	_ = c.nc.SetDeadline(time.Now())
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseRead()
		_ = tc.CloseWrite()
		return
	}
	_ = c.nc.Close()
}
