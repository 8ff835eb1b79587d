package edge

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/protocol"
	"github.com/natsrtc/signal/services/subject"
)

// hotPath sets up a real edge on a real NATS server with two logged-in
// connections whose sockets are loopback TCP, drained in the background, so
// that writes take the path they take in production.
func hotPath(tb testing.TB) (e *Edge, a, b *conn) { return hotPathOn(tb, false) }

// hotPathOn is hotPath; tapped: the edge's NATS connection is made by
// natsconn.Connect, with its tap (frames in from the read path, relays out
// through the poller's batch), as the binaries make it.
func hotPathOn(tb testing.TB, tapped bool) (e *Edge, a, b *conn) {
	tb.Helper()
	s := withRegistry(tb)
	nc := natstest.Conn(tb, s)
	if tapped {
		nc.Close()
		var err error
		if nc, err = natsconn.Connect(natsconn.Config{URL: s.ClientURL(), Logger: slog.New(slog.DiscardHandler)}); err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := natsconn.WaitConnected(ctx, nc); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(nc.Close)
	}
	e = newEdge(tb, Config{NC: nc, ID: "bench", Rate: -1, MaxCandidates: 1 << 30})
	sockets := socketPairs(tb)
	newConn := func(name string) *conn {
		c, client := loggedIn(tb, e, sockets, name)
		go func() { _, _ = io.Copy(io.Discard, client) }()
		clients.Store(c, client)
		return c
	}
	return e, newConn("alice"), newConn("bob")
}

var offer = []byte(`{"type":"candidate","name":"bob","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}`)

// BenchmarkClientToNATS: a client frame in to its NATS publish: UTF-8 check,
// parse, validation, frame building, routing and publish.
func BenchmarkClientToNATS(b *testing.B) {
	_, a, _ := hotPath(b)
	sink(a)
	b.ReportAllocs()
	b.SetBytes(int64(len(offer)))
	for b.Loop() {
		a.message(ws.OpText, offer)
	}
}

// BenchmarkNATSToClient: a NATS message in to the socket write.
func BenchmarkNATSToClient(b *testing.B) {
	e, _, bob := hotPath(b)
	m := natsMsg(bob)
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		e.deliver(m)
		waitWritten(bob)
	}
}

// BenchmarkTapToClient: a frame from the NATS read path (the connection's
// tap) to the socket write: header lookup, the kept copy, the session's
// delivery.
func BenchmarkTapToClient(b *testing.B) {
	e, _, bob := hotPath(b)
	subj, hdr, data := tapFrame(e, bob)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if !e.take(subj, nil, hdr, data) {
			b.Fatal("not taken")
		}
		waitWritten(bob)
	}
}

// tapFrame registers to's session for the read path, as a tapped
// connection would have it, and returns a frame for it as the tap passes
// it on.
func tapFrame(e *Edge, to *conn) (subj, hdr, data []byte) {
	e.inline.once.Do(func() {})
	e.inline.on = true
	e.inline.mu.Lock()
	e.inline.by = map[string]*inlineEntry{to.sess.token: {s: to.sess}}
	e.inline.mu.Unlock()
	m := natsMsg(to)
	hdr = []byte("NATS/1.0\r\n" + subject.HeaderFrom + ": alice\r\n" + subject.HeaderEdge + ": bench\r\n" +
		subject.HeaderSeq + ": s1:1\r\n" + subject.HeaderSent + ": 1\r\n\r\n")
	return []byte(m.Subject), hdr, m.Data
}

func natsMsg(to *conn) *nats.Msg {
	data := protocol.AppendCandidate(nil, []byte(`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}`))
	return &nats.Msg{
		Subject: subject.User(names.Token("bob")),
		Sub:     to.sess.sub,
		Header:  nats.Header{subject.HeaderFrom: {"alice"}, subject.HeaderEdge: {"bench"}},
		Data:    data,
	}
}

// sink points a's route cache at a subject nobody subscribes, without a
// reply subject: the publish ends at the NATS server, so the measurements
// see the sending edge's work only (a receiver in this process would add
// nats.go's allocations for the message it reads).
func sink(a *conn) {
	a.message(ws.OpText, offer) // a real route first: online check and cache
	for i := range a.snd.routes {
		if r := &a.snd.routes[i]; r.subj != "" {
			r.subj, r.reply = "bench.sink", ""
		}
	}
}

// loggedIn makes a connection of e on a loopback socket from sockets, logs
// it in as name and returns it with the client's end, which the caller
// reads.
func loggedIn(tb testing.TB, e *Edge, sockets func(*Edge) (*conn, net.Conn), name string) (*conn, net.Conn) {
	c, client := sockets(e)
	e.conns.mu.Lock()
	e.conns.byID[c.id] = c
	e.connWG.Add(1)
	e.conns.mu.Unlock()
	e.stats.connections.Add(1)
	f := new(protocol.Frame)
	data := []byte(`{"type":"login","name":"` + name + `"}`)
	if err := protocol.Parse(data, f); err != nil {
		tb.Fatal(err)
	}
	c.login(f, data)
	if c.sess == nil {
		tb.Fatalf("login %s failed", name)
	}
	tb.Cleanup(c.teardown) // before the edge's shutdown, which waits for it
	return c, client
}

// clients holds the client's end of hotPath's connections.
var clients sync.Map // *conn -> net.Conn

// socketPairs returns a function that makes a connection of e on a loopback
// TCP socket (set up for direct writes, not watched by the poller: tests
// call its methods themselves) and returns it with the client's end.
func socketPairs(tb testing.TB) func(e *Edge) (*conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ln.Close() })
	return func(e *Edge) (*conn, net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		server, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = client.Close(); _ = server.Close() })
		c := &conn{e: e, id: e.conns.next.Add(1), nc: server, r: server, fd: -1}
		_, _ = socket(c)
		return c, client
	}
}

// waitWritten waits until c's writer has written everything queued.
func waitWritten(c *conn) {
	for !writtenAll(c) {
	}
}

func writtenAll(c *conn) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return !c.writing && len(c.queue) == 0
}

// TestHotPathAllocs holds the per-message paths to their allocation
// budgets. AllocsPerRun counts every allocation in the process, and the
// NATS server runs in this process too, so the budgets are:
//
//   - client frame to NATS publish: 3. Two are nats.go's: Msg.headerBytes
//     encodes each publish's headers into a new buffer, and its API offers
//     no way to reuse one. One is the in-process NATS server's, for the
//     message it routes. Parsing, validation, frame building and routing
//     in the edge allocate nothing.
//   - NATS message to socket write: 0 where the frame is written at once
//     from the delivering goroutine (Linux, a socket the kernel takes it
//     from); 1 elsewhere, the closure of the "go" statement that starts the
//     socket's writer. The *nats.Msg itself is allocated by nats.go's
//     reader before it reaches the edge.
//   - the same from a tapped connection's read path (inline.go): one more,
//     the frame's kept copy; nats.go allocates nothing for it.
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	e, a, bob := hotPath(t)
	sink(a)
	if n := testing.AllocsPerRun(1000, func() { a.message(ws.OpText, offer) }); n > 3 {
		t.Errorf("client frame to NATS publish: %.1f allocations, want at most 3", n)
	}
	// AllocsPerRun counts the whole process: let the NATS server finish
	// routing the publishes above before measuring the next path.
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m := natsMsg(bob)
	budget := 1.0
	if bob.raw != nil {
		budget = 0
	}
	// Each round starts with the client's end drained (settled), so that
	// the socket always has room: a frame the kernel cannot take goes to a
	// writer goroutine, which is the other path.
	settled := settler(t, bob)
	if n := testing.AllocsPerRun(1000, func() { settled(); e.deliver(m); waitWritten(bob) }); n > budget {
		t.Errorf("NATS message to socket write: %.1f allocations, want at most %.0f", n, budget)
	}
	// From the read path (a tapped connection): the kept copy of the
	// frame, one allocation for its bytes and header values, where nats.go
	// made a message, a payload copy and a header map (the *nats.Msg above
	// is made once, outside the loop).
	subj, hdr, data := tapFrame(e, bob)
	if n := testing.AllocsPerRun(1000, func() { settled(); e.take(subj, nil, hdr, data); waitWritten(bob) }); n > budget+1 {
		t.Errorf("tapped NATS frame to socket write: %.1f allocations, want at most %.0f", n, budget+1)
	}
}
