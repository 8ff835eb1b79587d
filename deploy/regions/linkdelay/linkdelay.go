// Package linkdelay is a TCP proxy that stands in for the long link between
// two regions on one machine: every byte it forwards arrives a fixed delay
// after it was read, in each direction, in order, and the link can be cut
// and restored. deploy/regions.sh and the regions test put one [Link] in
// front of each NATS node's gateway port, and each node advertises its
// Link's address instead of its own, so that every gateway connection
// between the two clusters goes through a Link while routes and clients
// inside a region do not.
//
// Loopback only: it is a test fixture, not a network emulator. The delay is
// added per chunk read (at most 32 KiB), with no bandwidth limit and no
// loss; what it models is the round trip, which is what a signaling
// message between regions pays.
package linkdelay

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the state of a Link.
type Mode int32

// Modes of a Link.
const (
	// Up forwards every connection with the delay.
	Up Mode = iota
	// Cut closes every connection at once and stops listening, so that a
	// new connection is refused: both ends see the link go, as with a
	// reset, a router that knows the route is gone. NATS servers notice at
	// once and retry their gateways every second.
	Cut
	// Blackhole keeps every connection open and forwards nothing: bytes
	// are read and dropped, new connections are accepted and held silent.
	// Nobody is told; NATS servers find out only when their gateway pings
	// go unanswered (ping_interval, at most 15 s for gateways, times
	// ping_max). Restore then closes those connections, whose streams
	// lost bytes.
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Up:
		return "up"
	case Cut:
		return "cut"
	case Blackhole:
		return "blackhole"
	}
	return "unknown"
}

// chunkSize is the most a pipe reads at once.
const chunkSize = 32 << 10

// queueChunks bounds what one direction holds in flight: a reader that gets
// that far ahead of its writer waits, as a full TCP window would.
const queueChunks = 256

// Link forwards the connections accepted on one listener to one target.
type Link struct {
	addr   string
	target string
	delay  time.Duration

	mode   atomic.Int32
	mu     sync.Mutex
	ln     net.Listener // nil while cut
	pairs  map[*pair]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted, held atomic.Int64
	bytes          [2]atomic.Int64 // forwarded: 0 client to target, 1 back
}

// Stats counts what a Link did.
type Stats struct {
	Mode     string `json:"mode"`
	Listen   string `json:"listen"`
	Target   string `json:"target"`
	Open     int    `json:"open"`     // connections open now
	Accepted int64  `json:"accepted"` // connections forwarded since the start
	Held     int64  `json:"held"`     // connections accepted and held silent (Blackhole)
	BytesOut int64  `json:"bytes_out"`
	BytesIn  int64  `json:"bytes_in"`
}

// Listen opens a Link on addr (host:port; port 0 picks one) to target,
// delaying each direction by delay. Close it when done.
func Listen(addr, target string, delay time.Duration) (*Link, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &Link{addr: ln.Addr().String(), ln: ln, target: target, delay: delay, pairs: map[*pair]struct{}{}}
	l.wg.Add(1)
	go l.accept(ln)
	return l, nil
}

// Addr is the address the Link listens on (again, after a Cut).
func (l *Link) Addr() string { return l.addr }

// Target is where the Link forwards to.
func (l *Link) Target() string { return l.target }

// Mode returns the Link's mode.
func (l *Link) Mode() Mode { return Mode(l.mode.Load()) }

// Cut closes every connection and refuses new ones until Restore.
func (l *Link) Cut() {
	l.mode.Store(int32(Cut))
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	l.mu.Unlock()
	l.closeAll()
}

// Blackhole silences the link without telling either end (see [Blackhole]).
func (l *Link) Blackhole() {
	if l.Mode() == Cut {
		_ = l.Restore()
	}
	l.mode.Store(int32(Blackhole))
}

// Restore brings the link back up: after a Cut it listens again on the
// same address (the error says why it could not); connections held silent
// by Blackhole are closed (bytes were dropped in the middle of their
// streams). The ends connect again.
func (l *Link) Restore() error {
	if err := l.relisten(); err != nil {
		return err
	}
	if Mode(l.mode.Swap(int32(Up))) == Blackhole {
		l.closeAll()
	}
	return nil
}

// relisten listens again if a Cut closed the listener.
func (l *Link) relisten() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	if l.ln != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for try := 0; ; try++ {
		if ln, err = net.Listen("tcp", l.addr); err == nil || try == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port may linger a moment
	}
	if err != nil {
		return err
	}
	l.ln = ln
	l.wg.Add(1)
	go l.accept(ln)
	return nil
}

func (l *Link) closeAll() {
	l.mu.Lock()
	ps := make([]*pair, 0, len(l.pairs))
	for p := range l.pairs {
		ps = append(ps, p)
		delete(l.pairs, p)
	}
	l.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

// Stats reports the Link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	open := len(l.pairs)
	l.mu.Unlock()
	return Stats{
		Mode: l.Mode().String(), Listen: l.Addr(), Target: l.target, Open: open,
		Accepted: l.accepted.Load(), Held: l.held.Load(),
		BytesOut: l.bytes[0].Load(), BytesIn: l.bytes[1].Load(),
	}
}

// Close stops listening, closes every connection and waits for the Link's
// goroutines to end.
func (l *Link) Close() error {
	l.mu.Lock()
	l.closed = true
	var err error
	if l.ln != nil {
		err = l.ln.Close()
		l.ln = nil
	}
	l.mu.Unlock()
	l.closeAll()
	l.wg.Wait()
	return err
}

func (l *Link) accept(ln net.Listener) {
	defer l.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		switch l.Mode() {
		case Cut: // accepted as the listener closed
			c.Close()
			continue
		case Blackhole:
			l.held.Add(1)
			l.hold(c)
			continue
		}
		l.wg.Add(1)
		go l.forward(c)
	}
}

// hold keeps c open and silent until Restore or Close.
func (l *Link) hold(c net.Conn) {
	p := newPair(c, nil)
	if !l.add(p) {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.remove(p)
		_, _ = io.Copy(io.Discard, c)
		p.close()
	}()
}

// forward dials the target for c and pipes both ways.
func (l *Link) forward(c net.Conn) {
	defer l.wg.Done()
	u, err := net.DialTimeout("tcp", l.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p := newPair(c, u)
	if !l.add(p) {
		return
	}
	defer l.remove(p)
	l.accepted.Add(1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pipe(p, c, u, &l.bytes[0]) }()
	go func() { defer wg.Done(); l.pipe(p, u, c, &l.bytes[1]) }()
	wg.Wait()
	p.close()
}

// add registers p, or closes it when the Link is closing or was cut
// meanwhile.
func (l *Link) add(p *pair) bool {
	l.mu.Lock()
	ok := !l.closed && l.Mode() != Cut
	if ok {
		l.pairs[p] = struct{}{}
	}
	l.mu.Unlock()
	if !ok {
		p.close()
	}
	return ok
}

func (l *Link) remove(p *pair) {
	l.mu.Lock()
	delete(l.pairs, p)
	l.mu.Unlock()
}

// chunk is bytes read at one moment, to be written at due.
type chunk struct {
	b   []byte
	due time.Time
}

var bufs = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// pipe copies src to dst, each chunk delay after it was read, in order.
// When src ends, what was read is still delivered (at its time) and dst's
// write side is closed; any error, or a Cut, closes the pair.
func (l *Link) pipe(p *pair, src, dst net.Conn, count *atomic.Int64) {
	q := make(chan chunk, queueChunks)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for ch := range q {
			if d := time.Until(ch.due); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-p.closed:
				}
			}
			if p.isClosed() || l.Mode() == Blackhole {
				// Cut closed the pair; Blackhole drops it.
				bufs.Put(&ch.b)
				continue
			}
			count.Add(int64(len(ch.b))) // before the write, so a reader of the bytes sees them counted
			_, err := dst.Write(ch.b)
			bufs.Put(&ch.b)
			if err != nil {
				p.close()
			}
		}
	}()
	for {
		bp := bufs.Get().(*[]byte)
		n, err := src.Read((*bp)[:chunkSize])
		if n > 0 {
			q <- chunk{b: (*bp)[:n], due: time.Now().Add(l.delay)}
		} else {
			bufs.Put(bp)
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
	if tc, ok := dst.(*net.TCPConn); ok && !p.isClosed() {
		_ = tc.CloseWrite()
		return
	}
	p.close()
}

// pair is a client connection and its connection to the target (b is nil
// for a connection held by Blackhole).
type pair struct {
	a, b   net.Conn
	once   sync.Once
	closed chan struct{}
}

func newPair(a, b net.Conn) *pair { return &pair{a: a, b: b, closed: make(chan struct{})} }

func (p *pair) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

func (p *pair) close() {
	p.once.Do(func() {
		close(p.closed)
		p.a.Close()
		if p.b != nil {
			p.b.Close()
		}
	})
}
