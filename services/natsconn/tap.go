package natsconn

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/subject"
)

// Tap takes messages off a NATS connection's read path before nats.go
// parses them: a consumer that owns some subjects (the edge, its users'
// subjects) gets their messages on the goroutine that reads the
// connection, without nats.go's per-message allocations (the message, a
// copy of its payload, the decoded headers) and without the hand-over to
// another goroutine that every nats.go subscription makes. Everything else
// (and every message the Taker does not take) reaches nats.go unchanged,
// in order.
//
// A Tap sits between nats.go and the connection it dials (or the
// in-process server's connection) and follows the server's protocol
// stream op by op. It gives up, and passes every byte through from then
// on, at anything it does not expect: TLS (the server's INFO requires or
// offers it, or the first bytes are not an INFO), a websocket, a malformed
// or oversized control line.
//
// Connect installs one on every connection without TLS; TapOf finds it.
type Tap struct {
	prefix []byte
	taker  atomic.Pointer[Taker]
	mu     sync.Mutex // serializes SetTaker
	taken  atomic.Uint64
	cur    atomic.Pointer[tapConn] // the connection dialed last
	gen    atomic.Uint64           // connections dialed so far
}

// Gen counts the connections the Tap has followed: it changes with every
// (re)connect, after which what the server said (its max_payload) may
// differ.
func (t *Tap) Gen() uint64 { return t.gen.Load() }

// Taker is offered every MSG and HMSG whose subject starts with the Tap's
// prefix, on the connection's reading goroutine, in the order they arrive.
// It returns true when it took the message: nats.go never sees it. header
// is the message's header block (nil for a MSG), data its payload; the
// slices are valid during the call only. A message too big to be offered
// (over 1 MiB) is announced with data nil, and passes to nats.go whatever
// the Taker returns, so that a Taker that keeps order can send what follows
// the same way. A Taker must not block, and must not wait on the
// connection (a request, a flush): nothing is read from it meanwhile.
type Taker func(subject, reply, header, data []byte) bool

// TapPrefix is the subject prefix of the Taps Connect installs: the users'
// subjects.
const TapPrefix = subject.UserPrefix

// NewTap returns a Tap that offers the messages on subjects starting with
// prefix.
func NewTap(prefix string) *Tap { return &Tap{prefix: []byte(prefix)} }

// SetTaker sets the Tap's Taker, unless it has one already (false).
func (t *Tap) SetTaker(fn Taker) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.taker.Load() != nil {
		return false
	}
	t.taker.Store(&fn)
	return true
}

// ClearTaker removes the Tap's Taker, so that another may be set (an edge
// that stopped on a connection that lives on). A call of the old Taker in
// progress on the reading goroutine may still finish after it returns.
func (t *Tap) ClearTaker() {
	t.mu.Lock()
	t.taker.Store(nil)
	t.mu.Unlock()
}

// Taken is how many messages the Taker has taken.
func (t *Tap) Taken() uint64 { return t.taken.Load() }

// TapOf returns the Tap on nc's connections, or nil when it has none.
func TapOf(nc *nats.Conn) *Tap {
	switch v := nc.Opts.CustomDialer.(type) {
	case *tapDialer:
		return v.tap
	}
	if v, ok := nc.Opts.InProcessServer.(*tapInProcess); ok {
		return v.tap
	}
	return nil
}

// tapDialer dials TCP as nats.go would (its Timeout) and puts the Tap on
// each connection.
type tapDialer struct {
	tap     *Tap
	timeout time.Duration
}

func (d *tapDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: d.timeout}).Dial(network, address)
	if err != nil {
		return nil, err
	}
	return d.tap.conn(c), nil
}

// tapInProcess puts the Tap on an in-process server's connections.
type tapInProcess struct {
	tap *Tap
	p   nats.InProcessConnProvider
}

func (t *tapInProcess) InProcessConn() (net.Conn, error) {
	c, err := t.p.InProcessConn()
	if err != nil {
		return nil, err
	}
	return t.tap.conn(c), nil
}

func (t *Tap) conn(c net.Conn) net.Conn {
	tc := &tapConn{Conn: c, t: t, in: make([]byte, tapBufferSize), first: true}
	tc.plain.Store(true)
	t.cur.Store(tc)
	t.gen.Add(1)
	return tc
}

// ErrNoDirect is WriteDirect's error when it cannot write: the caller
// publishes through nats.go instead.
var ErrNoDirect = errors.New("natsconn: no direct write now")

// WriteDirect writes b, whole protocol ops (PUB, HPUB), to nc's current
// connection, between nats.go's own writes (each of which is whole ops
// too): a publish without nats.go's buffer and flusher goroutine. It
// returns ErrNoDirect, having written nothing, unless Direct: the caller
// publishes through nats.go instead. Any other error is the connection's,
// which nats.go sees too; a write that failed part way closes the
// connection (as nats.go does), so that no cut op is followed by others.
// Ops that nats.go has buffered but not yet written may follow b
// (nc.Buffered says whether there are any).
func (t *Tap) WriteDirect(nc *nats.Conn, b []byte) error {
	c := t.cur.Load()
	if c == nil || !c.plain.Load() || !c.up.Load() {
		return ErrNoDirect
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.Conn.Write(b)
	if err != nil {
		c.up.Store(false)
		if n > 0 {
			_ = c.Conn.Close()
		}
	}
	return err
}

// Direct reports whether WriteDirect can write now: the current connection
// is followed in plain text and its handshake was answered (the server's
// first PONG), and it has not failed or closed since. It reads two
// atomics: no lock of nats.go's, so a caller that must not wait (a poller)
// may ask before every publish. False says nothing of nats.go's own state.
func (t *Tap) Direct() bool {
	c := t.cur.Load()
	return c != nil && c.plain.Load() && c.up.Load()
}

const (
	// tapBufferSize is the read buffer of a tapped connection, as big as
	// nats.go's own.
	tapBufferSize = 32 << 10
	// tapMaxLine bounds a control line the Tap waits for whole (MSG,
	// HMSG; the first INFO may be longer, up to tapMaxInfo); nats-server's
	// own limit is 4 KiB.
	tapMaxLine = 4 << 10
	tapMaxInfo = 64 << 10
	// tapMaxTake: bigger messages are not offered (they pass through to
	// nats.go) rather than buffered whole here.
	tapMaxTake = 1 << 20
)

// tapConn is one tapped connection. Bytes read from Conn wait in
// in[r:w]; in[r:d] are decided (they go to nats.go as they are); the op at
// d is not decided yet, unless the state says how much more passes.
type tapConn struct {
	net.Conn
	t       *Tap
	in      []byte
	r, d, w int
	line    bool        // in the middle of a control line that passes (up to '\n')
	skip    int         // bytes of a payload (and its CRLF) that pass
	bypass  bool        // gave up: everything passes
	first   bool        // the first op (the server's INFO) is still to come
	plain   atomic.Bool // not given up (WriteDirect may write)
	up      atomic.Bool // the server answered the handshake (its first PONG), and the connection has not failed since
	wmu     sync.Mutex  // one writer at a time: nats.go's and WriteDirect's
}

// Write is nats.go's: whole ops, between WriteDirect's.
func (c *tapConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.Conn.Write(b)
	if err != nil {
		c.up.Store(false)
	}
	return n, err
}

// Close ends direct writes before the connection.
func (c *tapConn) Close() error {
	c.up.Store(false)
	return c.Conn.Close()
}

func (c *tapConn) Read(p []byte) (int, error) {
	for {
		if c.d > c.r {
			n := copy(p, c.in[c.r:c.d])
			c.r += n
			return n, nil
		}
		if c.bypass {
			if c.w > c.r { // not reached: bypass decides every byte it has
				c.d = c.w
				continue
			}
			return c.Conn.Read(p)
		}
		if c.d < c.w && c.decide() {
			continue
		}
		// Need more bytes for the op at d.
		if c.r > 0 {
			c.w = copy(c.in, c.in[c.r:c.w])
			c.d -= c.r
			c.r = 0
		}
		if c.w == len(c.in) {
			c.in = append(c.in, 0)[:cap(c.in)]
		}
		n, err := c.Conn.Read(c.in[c.w:])
		c.w += n
		switch {
		case n > 0:
		case err == nil:
			return 0, nil
		case isTimeout(err):
			return 0, err // a deadline: nothing is lost, the next Read goes on
		case c.w > c.r:
			// The end: what was held back goes to nats.go, which reads
			// the error next.
			c.up.Store(false)
			c.d = c.w
			c.giveUp()
		default:
			c.up.Store(false)
			return 0, err
		}
	}
}

// decide moves d past what it can decide about; false when the op at d
// needs more bytes.
func (c *tapConn) decide() bool {
	start := c.d
	for c.d < c.w {
		switch {
		case c.bypass:
			c.d = c.w
		case c.skip > 0:
			n := min(c.skip, c.w-c.d)
			c.d += n
			c.skip -= n
		case c.line:
			if i := bytes.IndexByte(c.in[c.d:c.w], '\n'); i >= 0 {
				c.d += i + 1
				c.line = false
			} else {
				c.d = c.w
			}
		default:
			if !c.op() {
				return c.d > start
			}
		}
	}
	return c.d > start
}

// op decides about the op at d (at an op boundary); false when it needs
// more bytes.
func (c *tapConn) op() bool {
	b := c.in[c.d:c.w]
	if c.first {
		// The server's INFO, whole: with TLS, what follows is encrypted.
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(b) >= tapMaxInfo || !bytes.HasPrefix([]byte("INFO "), b[:min(len(b), 5)]) {
				c.giveUp()
				return true
			}
			return false
		}
		c.first = false
		line := b[:i]
		if !bytes.HasPrefix(line, []byte("INFO ")) || bytes.Contains(line, []byte(`"tls_required":true`)) ||
			bytes.Contains(line, []byte(`"tls_available":true`)) {
			c.giveUp()
			return true
		}
		c.d += i + 1
		return true
	}
	switch b[0] {
	case 'M', 'H':
	case 'I', 'P', '+', '-':
		if b[0] == 'P' && !c.up.Load() {
			if len(b) < 2 {
				return false
			}
			if b[1] == 'O' {
				// PONG: the answer to the handshake's PING (nats.go
				// sends CONNECT then PING, and is connected once the
				// PONG comes back).
				c.up.Store(true)
			}
		}
		c.line = true // INFO, PING, PONG, +OK, -ERR: up to the end of the line
		return true
	default:
		c.giveUp()
		return true
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > tapMaxLine {
			c.giveUp()
			return true
		}
		return false
	}
	subj, reply, hdr, total, ok := parseMsgLine(b[:i+1])
	if !ok {
		c.giveUp()
		return true
	}
	taker := c.t.taker.Load()
	if taker == nil || total > tapMaxTake || !bytes.HasPrefix(subj, c.t.prefix) {
		if taker != nil && total > tapMaxTake && bytes.HasPrefix(subj, c.t.prefix) {
			(*taker)(subj, reply, nil, nil) // told: this one goes to nats.go
		}
		c.d += i + 1
		c.skip = total + 2
		return true
	}
	end := i + 1 + total + 2
	if len(b) < end {
		return false // Read compacts and grows in[] until the op fits
	}
	payload := b[i+1 : i+1+total]
	if b[end-2] != '\r' || b[end-1] != '\n' {
		c.giveUp()
		return true
	}
	var h []byte
	if hdr >= 0 {
		h, payload = payload[:hdr], payload[hdr:]
	}
	if !(*taker)(subj, reply, h, payload) {
		c.d += end
		return true
	}
	c.t.taken.Add(1)
	// Drop the op: the decided bytes before it move up to its end.
	copy(c.in[c.d+end-(c.d-c.r):], c.in[c.r:c.d])
	c.r += end
	c.d += end
	return true
}

// parseMsgLine parses "MSG <subject> <sid> [reply] <size>\r\n" or "HMSG
// <subject> <sid> [reply] <header size> <total size>\r\n". hdr is -1 for a
// MSG.
func parseMsgLine(line []byte) (subj, reply []byte, hdr, total int, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	var f [6][]byte
	n := 0
	for len(line) > 0 {
		i := bytes.IndexAny(line, " \t")
		if i == 0 {
			line = line[1:]
			continue
		}
		if n == len(f) {
			return nil, nil, 0, 0, false
		}
		if i < 0 {
			f[n], line = line, nil
		} else {
			f[n], line = line[:i], line[i+1:]
		}
		n++
	}
	num := func(b []byte) int {
		if len(b) == 0 || len(b) > 9 {
			return -1
		}
		v := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	switch {
	case n >= 4 && string(f[0]) == "MSG":
		if n == 5 {
			reply = f[3]
		} else if n != 4 {
			return nil, nil, 0, 0, false
		}
		total = num(f[n-1])
		return f[1], reply, -1, total, total >= 0
	case n >= 5 && string(f[0]) == "HMSG":
		if n == 6 {
			reply = f[3]
		} else if n != 5 {
			return nil, nil, 0, 0, false
		}
		hdr, total = num(f[n-2]), num(f[n-1])
		return f[1], reply, hdr, total, hdr >= 0 && total >= hdr
	}
	return nil, nil, 0, 0, false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// giveUp passes every byte from now on, and stops direct writes.
func (c *tapConn) giveUp() {
	c.bypass = true
	c.plain.Store(false)
}
