package edge

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// conn is one client socket. Its reader (for a polled socket whoever holds
// pbusy, see poll_linux.go; serve otherwise) owns everything not marked otherwise, one reader at a
// time. A frame for the client is written at once by whoever enqueues it
// when nothing is waiting and the kernel takes it; otherwise it waits in a
// bounded queue drained by a writer goroutine that exists only while there
// is something to write (writer.go). A polled idle connection has no
// goroutine at all.
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

	msg  *[]byte         // a message being assembled from fragments; nil between messages
	op   ws.OpCode       // its opcode
	fd   int             // the socket, when the poller watches it (else -1)
	raw  syscall.RawConn // the socket, for writes without a writer goroutine (nil: none)
	torn atomic.Bool     // teardown has run

	// A polled socket's reader: pbusy is held by whoever reads it (the
	// poller, or the goroutine it handed the socket to); ppend is an event
	// that came meanwhile, for the holder (poll_linux.go).
	pbusy, ppend atomic.Bool
	direct       bool // its reader is the poller's goroutine: relays go to the poller's batch

	// sess is the logged-in session, set and read by the reader; other
	// goroutines read it under smu, which also guards ended: once the
	// connection has ended, no session attaches to it.
	sess  *session
	snd   *sender // publishing state, made on the first relayed message
	smu   sync.Mutex
	ended bool

	// deliberate: a close frame was sent or received (either side asked
	// for the close); a resumable session whose connection ends without
	// one dropped, and is held for the resume grace.
	deliberate atomic.Bool
	// revoked: the session's name now belongs to someone else (a resume,
	// a kick, a release while this edge was cut off); nothing it sends
	// counts.
	revoked atomic.Bool

	nomu sync.Mutex // guards told
	told *[4]told   // the last "not online" errors, for notOnline; made on the first

	lastRead atomic.Int64 // unix nanoseconds of the last frame from the client
	pinged   atomic.Bool  // a liveness ping is outstanding

	wmu       sync.Mutex
	streamOff uint64    // bytes of the frames accepted for the socket so far
	texts     uint64    // text frames accepted for the socket so far
	track     *sentRing // frames of a resumable session not known delivered; nil: not tracked
	base      uint64    // the socket's byte count before the first frame (tracking)
	queue     []outFrame
	spare     []outFrame // the writer's last batch, reused as the next queue
	queued    int        // bytes in queue
	writing   bool
	closeSent bool // a close frame is queued: nothing may follow it
	done      bool // the read loop ended: the writer closes the socket
}

// readBufferSize is the per-connection read buffer: an SDP offer or a
// batch of candidates fits.
const readBufferSize = 1024

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
		e.release(ip)
		e.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := &conn{e: e, id: e.conns.next.Add(1), nc: nc, r: nc, ip: ip, authName: authName}
	c.lastRead.Store(time.Now().UnixNano())
	c.fd = -1
	var src io.Reader = nc
	pre := rw.Reader.Buffered()
	if e.poll != nil && pre == 0 {
		if fd, err := socket(c); err == nil {
			c.fd = fd
			c.base = sentSoFar(c)
		}
	}
	if pre > 0 {
		// The client sent frames right behind its request.
		b, _ := rw.Reader.Peek(pre)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc)
	}
	e.conns.mu.Lock()
	if e.closing.Load() {
		e.conns.mu.Unlock()
		e.release(ip)
		_ = nc.Close()
		return
	}
	e.conns.byID[c.id] = c
	e.connWG.Add(1)
	e.conns.mu.Unlock()
	e.stats.connections.Add(1)
	if c.fd >= 0 {
		if e.poll.watch(c) == nil {
			return // the poller reads it when the client sends something
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

// attach makes s the connection's session, unless the connection has ended
// meanwhile (false).
func (c *conn) attach(s *session) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.ended {
		return false
	}
	c.sess = s
	c.snd = nil // its headers name the previous login, if any
	return true
}

// teardown runs once, on the reader, when the read loop ends: the socket is
// closed (by the writer if it still has a close frame to send), the session
// ends (released at once, or held for a resume), and the connection is
// forgotten.
func (c *conn) teardown() {
	if !c.torn.CompareAndSwap(false, true) {
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
	track := c.detachTrack()
	c.wmu.Unlock()
	if !writing {
		go c.lingerClose()
	}
	c.smu.Lock()
	c.ended = true
	s := c.sess
	c.smu.Unlock()
	if s != nil {
		s.connEnded(c, track)
	}
	e := c.e
	e.conns.remove(c)
	e.release(c.ip)
	e.stats.connections.Add(-1)
	e.connWG.Done()
}

// sentRing holds the frames of a resumable session written (or queued) to
// its socket since its login reply, each with where it ends in the byte
// stream and its number among the text frames of the connection, until
// they are older than the resume bounds. When the connection drops, the
// held session keeps them: a resuming client that says how many frames it
// received ("received") gets exactly those after them; one that does not
// gets those beyond what its TCP stack acknowledged.
type sentRing struct {
	frames []keptFrame
	ends   []uint64 // byte offset of each frame's end
	idx    []uint64 // each frame's number among the connection's text frames
	bytes  int
	login  uint64 // the number of the login reply's frame
	acked  uint64 // bytes the client's TCP stack acknowledged (set when detached)
}

func (r *sentRing) add(f keptFrame, end, idx uint64, maxFrames, maxBytes int) {
	r.frames = append(r.frames, f)
	r.ends = append(r.ends, end)
	r.idx = append(r.idx, idx)
	r.bytes += len(f.data)
	drop := 0
	for len(r.frames)-drop > maxFrames || r.bytes > maxBytes {
		r.bytes -= len(r.frames[drop].data)
		drop++
	}
	if drop > 0 {
		clear(r.frames[:drop])
		r.frames = append(r.frames[:0], r.frames[drop:]...)
		r.ends = append(r.ends[:0], r.ends[drop:]...)
		r.idx = append(r.idx[:0], r.idx[drop:]...)
	}
}

// undelivered returns the frames the client did not get: those after the
// first received frames after the login reply when received >= 0, else
// those that end beyond what its TCP stack acknowledged.
func (r *sentRing) undelivered(received int64) []keptFrame {
	if r == nil {
		return nil
	}
	for i := range r.frames {
		if received >= 0 && r.idx[i] > r.login+uint64(received) || received < 0 && r.ends[i] > r.acked {
			return r.frames[i:]
		}
	}
	return nil
}

// detachTrack takes the connection's ring, noting what the client's TCP
// stack acknowledged; c.wmu is held.
func (c *conn) detachTrack() *sentRing {
	r := c.track
	c.track = nil
	if r != nil {
		r.acked = ackedSoFar(c) - c.base
	}
	return r
}
