//go:build linux

package edge

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/natsrtc/signal/services/protocol"
)

// settler returns a function that waits until everything written to c has
// been read by its client (hotPath's background reader): nothing unsent in
// the edge's socket, nothing unread in the client's. It allocates nothing.
func settler(tb testing.TB, c *conn) func() {
	v, ok := clients.Load(c)
	if !ok {
		tb.Fatal("not a hotPath connection")
	}
	sfd, cfd := fdOf(tb, c.nc), fdOf(tb, v.(net.Conn))
	return func() {
		for {
			out, err1 := unix.IoctlGetInt(sfd, unix.SIOCOUTQ)
			in, err2 := unix.IoctlGetInt(cfd, unix.SIOCINQ)
			if err1 != nil || err2 != nil || out == 0 && in == 0 {
				return
			}
			runtime.Gosched()
		}
	}
}

func fdOf(tb testing.TB, nc net.Conn) int {
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// socketPath sets up carol, a logged-in connection whose frames the test
// writes to the socket as a client would, and returns a function that
// sends one frame and has it read and handled the way the poller does
// (ready, on the calling goroutine, with a buffer of the poller's size).
func socketPath(tb testing.TB) (e *Edge, sendAndRead func() bool) { return socketPathOn(tb, false) }

// socketPathOn is socketPath; tapped as hotPathOn (the relay goes to the
// poller's batch, written after each frame as at the end of a poller
// round).
func socketPathOn(tb testing.TB, tapped bool) (e *Edge, sendAndRead func() bool) {
	e, _, _ = hotPathOn(tb, tapped)
	c, client := loggedIn(tb, e, socketPairs(tb), "carol")
	go func() { _, _ = io.Copy(io.Discard, client) }()
	sink(c)
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, ws.MaskFrame(ws.NewTextFrame(offer))); err != nil {
		tb.Fatal(err)
	}
	frame := buf.Bytes()
	rd := newRawRead(pollBufferSize)
	relayed := &e.stats.relayed[protocol.TypeCandidate]
	return e, func() bool {
		if _, err := client.Write(frame); err != nil {
			return false
		}
		// The frame is in the socket when the loopback write returns, as
		// a rule; an event that finds nothing yet is one a poller gets too.
		for n := relayed.Load(); relayed.Load() == n && !c.torn.Load(); {
			c.ready(rd)
		}
		e.poll.flushBatch()
		return !c.torn.Load()
	}
}

// BenchmarkSocketToNATS: a client frame from the socket to its NATS
// publish, as a polled connection's reader handles it: the socket read,
// WebSocket header and unmasking, then all of BenchmarkClientToNATS. (The
// client's write is in the loop too.)
func BenchmarkSocketToNATS(b *testing.B) {
	_, next := socketPath(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(offer)))
	for b.Loop() {
		if !next() {
			b.Fatal("connection ended")
		}
	}
}

// TestSocketPathAllocs: the socket read and WebSocket framing add no
// allocation to the client-frame-to-publish budget of TestHotPathAllocs.
func TestSocketPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	_, next := socketPath(t)
	if n := testing.AllocsPerRun(1000, func() {
		if !next() {
			t.Fatal("connection ended")
		}
	}); n > 3 {
		t.Errorf("socket frame to NATS publish: %.1f allocations, want at most 3 (those of TestHotPathAllocs)", n)
	}
	// Tapped, as the binaries run: the publish is the poller's, written
	// as it is; what remains is the in-process NATS server's one for the
	// message it routes.
	e, next := socketPathOn(t, true)
	if e.poll.tap == nil {
		t.Fatal("the tapped edge's poller has no tap")
	}
	if n := testing.AllocsPerRun(1000, func() {
		if !next() {
			t.Fatal("connection ended")
		}
	}); n > 1 {
		t.Errorf("tapped socket frame to NATS publish: %.1f allocations, want at most 1 (the NATS server's)", n)
	}
}

// BenchmarkSocketToNATSTapped: BenchmarkSocketToNATS on a tapped
// connection (the poller's batch, no nats.go publish).
func BenchmarkSocketToNATSTapped(b *testing.B) {
	_, next := socketPathOn(b, true)
	b.ReportAllocs()
	b.SetBytes(int64(len(offer)))
	for b.Loop() {
		if !next() {
			b.Fatal("connection ended")
		}
	}
}
