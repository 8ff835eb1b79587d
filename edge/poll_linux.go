//go:build linux

package edge

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// poller watches idle client sockets with one epoll instance, so that an
// idle connection costs no goroutine and no read buffer: when a socket has
// data, a goroutine takes a pooled buffer, reads what is there, gives the
// buffer back and asks to be told again (EPOLLONESHOT, so one reader at a
// time). This is what keeps memory per idle user small; Go's own poller
// would need a goroutine parked in Read per socket.
//
// The socket stays in Go's poller too: reads go through net.Conn as usual,
// and one that finds no data (a frame whose rest is still on its way) parks
// like any other.
type poller struct {
	e      *Edge
	epfd   int
	closed atomic.Bool
	done   chan struct{}
}

func newPoller(e *Edge) (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{e: e, epfd: fd, done: make(chan struct{})}
	go p.wait()
	return p, nil
}

// pollEvents: readable, or the peer closed or reset.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

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
	w.n, w.err = unix.Write(int(fd), w.buf)
	return true // never wait for the socket: the writer goroutine does that
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

// watch registers c's socket (c.fd) with the poller.
func (p *poller) watch(c *conn) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, p.event(c))
}

func (p *poller) event(c *conn) *unix.EpollEvent {
	ev := &unix.EpollEvent{Events: pollEvents}
	// epoll_data is 64 bits: Fd and Pad together hold the connection id.
	*(*uint64)(unsafe.Pointer(&ev.Fd)) = c.id
	return ev
}

// rearm asks to be told when c's socket is readable again. Level-triggered:
// data that arrived meanwhile fires at once.
func (p *poller) rearm(c *conn) error {
	return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, p.event(c))
}

// forget removes c's socket before it is closed.
func (p *poller) forget(c *conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

func (p *poller) wait() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 512)
	for !p.closed.Load() {
		n, err := unix.EpollWait(p.epfd, events, 250)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.e.log.Error("epoll_wait failed; polled sockets are stuck", "err", err)
			return
		}
		for i := range n {
			id := *(*uint64)(unsafe.Pointer(&events[i].Fd))
			if c := p.e.conns.get(id); c != nil {
				go c.readReady()
			}
		}
	}
}

// close stops the poller once every socket is gone.
func (p *poller) close() {
	if p.closed.CompareAndSwap(false, true) {
		<-p.done
		_ = unix.Close(p.epfd)
	}
}

// pollReader is what a polled socket's reader borrows while it reads.
type pollReader struct {
	br  *bufio.Reader
	src stallGuard
	frameScratch
}

var pollReaders = sync.Pool{New: func() any { return &pollReader{br: bufio.NewReaderSize(nil, readBufferSize)} }}

// stallGuard is the source of a polled reader's buffer. The first read of a
// round finds data (the poller said so); a later one is for the rest of a
// frame, which must come within PongTimeout: a client that starts a frame
// and goes silent would otherwise hold this goroutine and its buffers until
// the dead-socket check, PingAfter+PongTimeout later.
type stallGuard struct {
	c     *conn
	reads int
	until time.Time // the deadline for the rest of the frame; zero until set
}

func (g *stallGuard) Read(p []byte) (int, error) {
	if g.reads > 0 && g.until.IsZero() {
		g.until = time.Now().Add(g.c.e.cfg.PongTimeout)
		_ = g.c.nc.SetReadDeadline(g.until)
	}
	g.reads++
	n, err := g.c.nc.Read(p)
	if err != nil && !g.until.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(g.until) {
		// Stalled in the middle of a frame: gone like a dead socket.
		g.c.e.stats.errors[reasonDeadSocket].Add(1)
	}
	return n, err
}

// readReady reads and handles the frames that have arrived on c's socket,
// then hands the socket back to the poller.
func (c *conn) readReady() {
	// One reader at a time is what EPOLLONESHOT ensures; the lock makes
	// that order visible to Go's memory model (and the race detector),
	// which cannot see the kernel's. It is never contended.
	c.rmu.Lock()
	defer c.rmu.Unlock()
	pr := pollReaders.Get().(*pollReader)
	pr.src = stallGuard{c: c}
	br := pr.br
	br.Reset(&pr.src)
	for {
		if !c.readFrame(br, &pr.frameScratch) {
			br.Reset(nil)
			pr.src = stallGuard{}
			pollReaders.Put(pr)
			c.teardown()
			return
		}
		if br.Buffered() == 0 {
			break
		}
	}
	if !pr.src.until.IsZero() {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	br.Reset(nil)
	pr.src = stallGuard{}
	pollReaders.Put(pr)
	if d := c.throttle(); d > 0 {
		// Over its rate: leave its bytes in the kernel for a while, so
		// that TCP slows the sender down instead of this edge spending
		// CPU on frames it would drop.
		time.AfterFunc(d, c.rearmLater)
		return
	}
	if err := c.e.poll.rearm(c); err != nil {
		c.teardown()
	}
}

// rearmLater hands a throttled socket back to the poller, unless the
// connection ended meanwhile.
func (c *conn) rearmLater() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.torn.Load() {
		return
	}
	if err := c.e.poll.rearm(c); err != nil {
		c.teardown()
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
