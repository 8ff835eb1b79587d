package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/protocol"
)

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
	closeAbuse       = closeReason{ws.StatusPolicyViolation, "too many messages"}
	// closeNameLost: the registry released the name (the edge was cut off
	// longer than its lease); log in again.
	closeNameLost = closeReason{ws.StatusCode(4001), "name released; log in again"}
	// closeResumed: the client resumed this session on another connection.
	closeResumed = closeReason{ws.StatusCode(4002), "session resumed elsewhere"}
)

// conn is one client socket. Its reader (readReady for a polled socket,
// serve otherwise) owns everything not marked otherwise, one reader at a
// time. A frame for the client is written at once by whoever enqueues it
// when nothing is waiting and the kernel takes it; otherwise it waits in a
// bounded queue drained by a writer goroutine that exists only while there
// is something to write. A polled idle connection has no goroutine at all.
type conn struct {
	e        *Edge
	id       uint64
	nc       net.Conn
	r        io.Reader
	ip       netip.Addr // the client's address, for the per-address limit
	authName string     // the name its token grants, when auth is on

	bucket    bucket // rate limit
	limitedAt int64  // when the client was last told it is limited
	logins    int    // login attempts
	cands     int    // candidates sent since the last offer or answer

	msg   *[]byte         // a message being assembled from fragments; nil between messages
	op    ws.OpCode       // its opcode
	fd    int             // the socket, when the poller watches it (else -1)
	raw   syscall.RawConn // the socket, for writes without a writer goroutine (nil: none)
	rmu   sync.Mutex      // held by the polled reader
	ended atomic.Bool     // teardown has run
	// revoked: the session's name now belongs to someone else (a resume,
	// or a release while this edge was cut off); nothing it sends counts.
	revoked atomic.Bool
	gone    bool // logged out; guarded by e.mu

	// Login state, set by the read loop; read by other goroutines only
	// through e.mu (bySub, peers) or after the loop has ended.
	name    string
	token   string
	session string
	rev     uint64 // the revision of the session's registry entry
	sub     *nats.Subscription
	snd     *sender // set by the first relayed message

	// peer is the token of the user this one last exchanged an offer or
	// answer with (either direction). Guarded by e.mu.
	peer string

	// deliberate is set once a close frame is queued (either side asked
	// for the close); a connection that ends without one dropped, and its
	// session is held for the resume grace period.
	deliberate atomic.Bool
	resumed    atomic.Bool // taken over by a resumed session: no logout, no leave

	lastRead atomic.Int64 // unix nanoseconds of the last frame from the client
	pinged   atomic.Bool  // a liveness ping is outstanding

	wmu       sync.Mutex
	queue     []outFrame
	spare     []outFrame // the writer's last batch, reused as the next queue
	queued    int        // bytes in queue
	writing   bool
	closeSent bool // a close frame is queued: nothing may follow it
	done      bool // the read loop ended: the writer closes the socket
}

// sender is what a connection needs to publish: its NATS headers and the
// route cache. It is made on the connection's first relayed message, so
// that a logged-in user who only waits for calls holds none of it (the
// headers alone are a map of three slices, some 450 bytes).
type sender struct {
	hdr     nats.Header
	sent    []string // the value slice of hdr's send time
	sentBuf [20]byte // its bytes

	// Route cache: the last target's subjects, so that a call's stream of
	// candidates costs no encoding and no allocation.
	target string
	token  string
	subj   string
	reply  string
}

// frameScratch is the space readFrame needs for a frame header and a
// control payload; it comes with the reader (pooled for polled sockets), so
// that an idle connection does not carry it.
type frameScratch struct {
	hdr [ws.MaxHeaderSize]byte
	ctl [125]byte
}

type outFrame struct {
	op   ws.OpCode
	raw  bool // data is the unwritten rest of a frame, header included
	data []byte
}

// readBufferSize is the per-connection read buffer: an SDP offer or a
// batch of candidates fits.
const readBufferSize = 1024

var framePool = sync.Pool{New: func() any { return new(protocol.Frame) }}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (e *Edge) upgrade(w http.ResponseWriter, r *http.Request) {
	ip, authName, ok := e.admit(w, r)
	if !ok {
		return
	}
	u := ws.HTTPUpgrader{Timeout: e.cfg.HandshakeTimeout}
	nc, rw, _, err := u.Upgrade(r, w)
	if err != nil {
		if nc != nil {
			_ = nc.Close()
		}
		e.releaseIP(ip)
		e.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := &conn{e: e, id: e.nextID.Add(1), nc: nc, r: nc, ip: ip, authName: authName}
	c.lastRead.Store(time.Now().UnixNano())
	c.fd = -1
	var src io.Reader = nc
	pre := rw.Reader.Buffered()
	if e.poll != nil && pre == 0 {
		if fd, err := socket(c); err == nil {
			c.fd = fd
		}
	}
	if pre > 0 {
		// The client sent frames right behind its request.
		b, _ := rw.Reader.Peek(pre)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	e.mu.Lock()
	if e.closing.Load() {
		e.mu.Unlock()
		e.releaseIP(ip)
		_ = nc.Close()
		return
	}
	e.byID[c.id] = c
	e.connWG.Add(1)
	e.mu.Unlock()
	e.stats.connections.Add(1)
	if c.fd >= 0 {
		if e.poll.watch(c) == nil {
			return // the poller calls readReady when the client sends something
		}
		c.fd = -1 // never watched: no event can race this write
	}
	// A small buffer turns the two or three reads of a frame (header,
	// extended length and mask, payload) into one system call for the
	// frames signaling sends; bigger payloads bypass it. A new goroutine,
	// so that the HTTP server's (larger) stack is not kept for the life of
	// the socket.
	c.r = bufio.NewReaderSize(src, readBufferSize)
	go c.serve()
}

// serve reads frames until the socket ends, then tears the connection
// down. It is the reader of connections the poller cannot watch (TLS, or
// bytes already buffered by the upgrade, or no poller on this system).
func (c *conn) serve() {
	defer c.teardown()
	s := new(frameScratch)
	for c.readFrame(c.r, s) {
		if d := c.throttle(); d > 0 {
			time.Sleep(d) // over its rate: let TCP slow the sender down
		}
	}
}

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
func (c *conn) message(op ws.OpCode, data []byte) bool {
	if c.revoked.Load() {
		return true // closing: its name is gone, it speaks for nobody
	}
	if drop, ok := c.limited(); drop {
		return ok
	}
	if op == ws.OpBinary {
		c.sendError(reasonBinary, "binary frames are not supported: send JSON text frames")
		return true
	}
	if !utf8.Valid(data) {
		c.fail(closeInvalidUTF8)
		return false
	}
	// Frames are pooled rather than kept per connection: a Frame carries
	// parser scratch space that an idle connection should not hold.
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
		return true
	}
	switch f.Type {
	case protocol.TypeLogin:
		c.login(f, data)
	case protocol.TypeOffer, protocol.TypeAnswer, protocol.TypeCandidate, protocol.TypeLeave:
		c.relay(f)
	default:
		c.sendError(reasonBadFrame, "Command not found: "+string(f.RawType))
	}
	return true
}

// sendError queues an error frame for this client.
func (c *conn) sendError(r reason, msg string) {
	c.e.stats.errors[r].Add(1)
	c.enqueue(ws.OpText, protocol.AppendError(nil, msg))
}

// enqueue queues a frame for the socket without blocking. A data frame that
// finds the queue full disconnects the client: one that does not read must
// not hold memory or anyone else. It reports whether the frame was queued.
func (c *conn) enqueue(op ws.OpCode, data []byte) bool {
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

// teardown runs when the read loop ends: the socket is closed (by the writer
// if it still has a close frame to send), the name released and the peer
// told.
func (c *conn) teardown() {
	if !c.ended.CompareAndSwap(false, true) {
		return
	}
	if c.fd >= 0 {
		c.e.poll.forget(c)
	}
	if c.msg != nil {
		readBufs.Put(c.msg)
		c.msg = nil
	}
	c.wmu.Lock()
	c.done = true
	writing := c.writing
	c.wmu.Unlock()
	if !writing {
		go c.lingerClose()
	}
	e := c.e
	if c.sub != nil {
		c.logout()
	}
	e.mu.Lock()
	delete(e.byID, c.id)
	e.mu.Unlock()
	e.releaseIP(c.ip)
	e.stats.connections.Add(-1)
	e.connWG.Done()
}
