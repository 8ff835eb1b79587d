//go:build linux

package edge

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/natsrtc/signal/services/natsconn"
)

// poller watches idle client sockets with one epoll instance, so that an
// idle connection costs no goroutine and no read buffer. Its goroutine
// reads a socket that has data itself, into its own buffer, and handles
// the whole frames there when nothing they ask for waits: a relayed
// message, a ping, a close (the common case costs no goroutine, no
// hand-over and no buffer of the connection's). A frame whose rest is still
// on its way, or a message that waits on the registry (a login, a join, a
// part, a watch: handleMessage), goes to a goroutine (slow) with the bytes
// read so far; that goroutine reads the rest of a frame within PongTimeout
// (a client that stalls mid-frame holds that goroutine only, never the
// poller) and hands the socket back.
//
// The epoll instance is itself watched by Go's network poller: the
// poller's goroutine parks like any reader while no socket has data,
// rather than holding a thread in epoll_wait. The sockets are
// edge-triggered (EPOLLET): an event says bytes arrived since the last
// one, so there is no re-arming, and whoever reads a socket reads it until
// it is empty. One reader at a time: a connection is owned (c.pbusy) by
// the poller or by the goroutine it handed the socket to; an event that
// finds it owned is left in c.ppend for the owner, which reads again
// before it lets go.
//
// The socket stays in Go's poller too (net.Conn's reads, deadlines and
// writes work as usual).
type poller struct {
	e      *Edge
	epfd   int
	file   *os.File // epfd, for Go's network poller
	closed atomic.Bool
	done   chan struct{}
	rd     *rawRead // the poller goroutine's read buffer

	tap     *natsconn.Tap // the NATS connection's, for direct publishes (direct.go); nil: none
	batch   []byte        // publishes not yet written (direct.go)
	senders []*conn       // the connections whose publishes batch holds
	maxPay  int64         // the server's max_payload, read once per connection (maxGen: the tap's Gen then)
	maxGen  uint64
}

func newPoller(e *Edge) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	p := &poller{e: e, epfd: fd, done: make(chan struct{}), rd: newRawRead(pollBufferSize), tap: natsconn.TapOf(e.nc)}
	// A non-blocking descriptor makes a pollable os.File.
	p.file = os.NewFile(uintptr(fd), "epoll")
	rc, err := p.file.SyscallConn()
	if err != nil {
		_ = p.file.Close()
		return nil, err
	}
	go p.wait(rc)
	return p, nil
}

// pollBufferSize is the poller goroutine's read buffer: room for a whole
// message of the default size limit, so that one normally arrives in one
// read and is handled there.
const pollBufferSize = DefaultMaxFrameSize + ws.MaxHeaderSize

// pollEvents: readable, or the peer closed or reset; edge-triggered.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// socket finds c's socket descriptor, so that c.fd is set before c is
// published to the poller's goroutine (through e.conns). It fails
// for sockets that are not plain TCP (TLS keeps decrypted bytes the kernel
// does not know about).
func socket(c *conn) (int, error) {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP socket")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	c.raw = rc
	return fd, nil
}

// directWrite is one non-blocking write of a frame, pooled with its
// callback so that a write allocates nothing.
type directWrite struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var directWrites = sync.Pool{New: func() any {
	w := &directWrite{buf: make([]byte, 0, 4096)}
	w.fn = w.write
	return w
}}

func (w *directWrite) write(fd uintptr) bool {
	w.n, w.err = rawIO(unix.SYS_WRITE, fd, w.buf)
	return true // never wait for the socket: the writer goroutine does that
}

// rawIO is read(2) or write(2) (trap) of b on a non-blocking socket, as a
// raw system call: one that cannot block needs none of what the runtime
// does around a system call that might (hand its P over, wake sysmon from
// its sleep, which was a futex call per idle period).
func rawIO(trap, fd uintptr, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// writeNow writes frame (op, data) to c's socket if the kernel takes it
// without waiting. It returns what the kernel did not take (nil when it
// took everything), or the error that ended the socket.
func (c *conn) writeNow(op ws.OpCode, data []byte) ([]byte, error) {
	w := directWrites.Get().(*directWrite)
	w.buf = appendFrameHeader(w.buf[:0], op, len(data))
	w.buf = append(w.buf, data...)
	w.n, w.err = 0, nil
	err := c.raw.Write(w.fn)
	if err == nil {
		err = w.err
	}
	var rest []byte
	switch {
	case errors.Is(err, unix.EAGAIN):
		err = nil
		rest = bytes.Clone(w.buf)
	case err == nil && w.n < len(w.buf):
		rest = bytes.Clone(w.buf[max(w.n, 0):])
	}
	if cap(w.buf) <= 64<<10 {
		w.buf = w.buf[:0]
		directWrites.Put(w)
	}
	return rest, err
}

// rawRead is one non-blocking read of a socket into buf, with its callback
// made once, so that a read allocates nothing.
type rawRead struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func newRawRead(size int) *rawRead {
	r := &rawRead{buf: make([]byte, size)}
	r.fn = r.read
	return r
}

func (r *rawRead) read(fd uintptr) bool {
	r.n, r.err = rawIO(unix.SYS_READ, fd, r.buf)
	return true // never wait: an empty socket is left to the poller
}

// rawReads are the read buffers of goroutines that read a polled socket
// other than the poller's (slow, and a throttled socket's timer).
var rawReads = sync.Pool{New: func() any { return newRawRead(readBufferSize * 4) }}

// readNow reads what c's socket has, without waiting: n bytes into r.buf,
// 0 and nil when it has nothing; an error (io.EOF for the end of the
// stream) when the connection is over.
func (c *conn) readNow(r *rawRead) (int, error) {
	r.n, r.err = 0, nil
	err := c.raw.Read(r.fn)
	if err == nil {
		err = r.err
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, nil
	case err == unix.EINTR:
		return c.readNow(r)
	case err != nil:
		return 0, err
	case r.n == 0:
		return 0, errEOF
	}
	return r.n, nil
}

var errEOF = errors.New("end of stream")

// watch registers c's socket (c.fd) with the poller. Bytes already there
// fire at once.
func (p *poller) watch(c *conn) error {
	ev := unix.EpollEvent{Events: pollEvents}
	// epoll_data is 64 bits: Fd and Pad together hold the connection id.
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = c.id
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
}

// forget removes c's socket before it is closed.
func (p *poller) forget(c *conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

// wait runs the poller's goroutine: it takes every event epoll has, and
// parks in Go's network poller when there are none.
func (p *poller) wait(rc syscall.RawConn) {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	err := rc.Read(func(fd uintptr) bool {
		for !p.closed.Load() {
			n, err := epollNow(fd, events)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				p.e.log.Error("epoll_wait failed; polled sockets are stuck", "err", err)
				return true
			}
			if n == 0 {
				return false // park until epoll has an event
			}
			for i := range n {
				id := *(*uint64)(unsafe.Pointer(&events[i].Fd))
				if c := p.e.conns.get(id); c != nil {
					c.ready(p.rd)
				}
			}
			p.flushBatch()
		}
		return true
	})
	if err != nil && !p.closed.Load() {
		p.e.log.Error("epoll watch failed; polled sockets are stuck", "err", err)
	}
}

// epollNow is epoll_wait(2) without waiting (epoll_pwait without a signal
// mask, which every architecture has; a raw system call, as rawIO).
func epollNow(fd uintptr, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// close stops the poller once every socket is gone.
func (p *poller) close() {
	if p.closed.CompareAndSwap(false, true) {
		_ = p.file.Close() // wakes the goroutine, which sees closed
		<-p.done
	}
}

// ready is the poller's event for c: c's socket has bytes, or ended. The
// poller reads them unless another goroutine owns the socket; that one
// reads again before it lets go (ppend).
func (c *conn) ready(r *rawRead) {
	c.ppend.Store(true)
	if c.pbusy.CompareAndSwap(false, true) {
		c.pump(r, true)
	}
}

// maxInlineReads bounds how many buffers full one socket gets from the
// poller in a row; a client that keeps it busy longer goes to a goroutine
// of its own (flood) so that the others are served.
const maxInlineReads = 4

// pump reads c's socket until it is empty and handles what it read; c is
// owned by the caller (c.pbusy), and the ownership passes on or ends here:
// to a goroutine (a frame not all there, a message that waits, a flood),
// to a timer (over its rate), to teardown (the end), or back to the poller.
// inline: the caller is the poller's goroutine, which must not wait.
func (c *conn) pump(r *rawRead, inline bool) {
	for {
		c.ppend.Store(false)
		for reads := 1; ; reads++ {
			n, err := c.readNow(r)
			if err != nil {
				c.handOff(inline)
				c.gone(inline)
				return
			}
			if n == 0 {
				break // empty
			}
			used, st, def := c.frames(r.buf[:n], inline)
			switch {
			case st == scanEnded:
				c.handOff(inline)
				c.gone(inline)
				return
			case st == scanDeferred || used < n:
				c.handOff(inline)
				go c.slow(def, clonePooled(r.buf[used:n]))
				return
			}
			if d := c.throttle(); d > 0 {
				// Over its rate: leave the rest of its bytes in the kernel
				// for a while, so that TCP slows the sender down instead
				// of this edge spending CPU on frames it would drop. The
				// socket stays owned.
				c.handOff(inline)
				time.AfterFunc(d, c.flood)
				return
			}
			if n < len(r.buf) {
				break // it had no more than that
			}
			if inline && reads >= maxInlineReads {
				c.handOff(inline)
				go c.flood()
				return
			}
		}
		c.pbusy.Store(false)
		// An event meanwhile (set before the owner's check) is this
		// goroutine's to serve, unless the poller took the socket since.
		if !c.ppend.Load() || !c.pbusy.CompareAndSwap(false, true) {
			return
		}
	}
}

// handOff writes the poller's batch before c's socket leaves the poller
// (inline): what c's next reader publishes through nats.go, or what its
// end publishes (leave to its peers), must come after c's relays.
func (c *conn) handOff(inline bool) {
	if inline {
		c.e.poll.flushBatch()
	}
}

// gone ends the connection after its socket ended or it must close. The
// socket stays owned: nothing reads it again.
func (c *conn) gone(inline bool) {
	if inline {
		go c.teardown() // a session's end may wait on the registry
		return
	}
	c.teardown()
}

// flood goes on reading c's socket on a goroutine of its own (a socket
// that had more than the poller serves in a row, or a throttled one whose
// time came).
func (c *conn) flood() {
	r := rawReads.Get().(*rawRead)
	c.pump(r, false)
	rawReads.Put(r)
}

// clonePooled returns b in a pooled buffer (readBufs), or nil if b is empty.
func clonePooled(b []byte) *[]byte {
	if len(b) == 0 {
		return nil
	}
	m := readBufs.Get().(*[]byte)
	*m = append((*m)[:0], b...)
	return m
}

// slow is the goroutine of a polled socket the poller handed over: it
// handles the deferred message def if there is one, then the bytes
// after it (rest: whole frames, or the start of one), reading the rest of
// a frame from the socket within PongTimeout, then hands the socket back.
// A client that starts a frame and goes silent would otherwise hold this
// goroutine and its buffer until the dead-socket check, PingAfter +
// PongTimeout later.
func (c *conn) slow(def, rest *[]byte) {
	if def != nil {
		ok := c.deferredMessage(*def)
		readBufs.Put(def)
		if !ok {
			if rest != nil {
				readBufs.Put(rest)
			}
			c.teardown()
			return
		}
	}
	if rest != nil {
		ok := c.finishFrames(rest)
		readBufs.Put(rest)
		if !ok {
			c.teardown()
			return
		}
	}
	c.flood()
}

// finishFrames handles the frames in *b and reads from the socket (waiting)
// until they end on a frame boundary; false when the connection is done.
// The rest of a frame must come within PongTimeout of its start. *b may
// grow.
func (c *conn) finishFrames(b *[]byte) bool {
	var until time.Time // the current frame's deadline; zero: none set
	set := false
	defer func() {
		if set {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
	}()
	for {
		used, st, _ := c.frames(*b, false) // nothing is deferred when not inline
		if st == scanEnded {
			return false
		}
		if used > 0 {
			*b = (*b)[:copy(*b, (*b)[used:])]
			until = time.Time{} // a frame ended: the next one has its own time
			if d := c.throttle(); d > 0 {
				time.Sleep(d) // over its rate: let TCP slow the sender down
			}
		}
		if len(*b) == 0 {
			return true
		}
		if until.IsZero() {
			until, set = time.Now().Add(c.e.cfg.PongTimeout), true
			_ = c.nc.SetReadDeadline(until)
		}
		if len(*b) == cap(*b) {
			*b = append(*b, 0)[:len(*b)] // grows as bytes arrive, never to a declared length
		}
		k, err := c.nc.Read((*b)[len(*b):cap(*b)])
		*b = (*b)[:len(*b)+k]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(until) {
				// Stalled in the middle of a frame: gone like a dead socket.
				c.e.stats.errors[reasonDeadSocket].Add(1)
			}
			return false
		}
	}
}

// sentSoFar is how many bytes have been written to c's socket: those the
// peer acknowledged and those still in the send queue.
func sentSoFar(c *conn) uint64 {
	var n uint64
	_ = c.raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = info.Bytes_acked
		}
		if q, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil && q > 0 {
			n += uint64(q)
		}
	})
	return n
}

// ackedSoFar is how many bytes written to c's socket the peer's TCP stack
// has acknowledged.
func ackedSoFar(c *conn) uint64 {
	var n uint64
	_ = c.raw.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = info.Bytes_acked
		}
	})
	return n
}
