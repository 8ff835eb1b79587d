//go:build linux

package edge

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestDirectWritePartial: frames are written straight from the enqueuing
// goroutine until the kernel stops taking them; then the unwritten rest of
// a frame goes to the writer goroutine ahead of what follows, and the
// client, once it reads, gets every frame whole and in order.
func TestDirectWritePartial(t *testing.T) {
	e, _, _ := hotPath(t)
	c, client := socketPairs(t)(e)
	// Small kernel buffers on both sides (set after the connection is up,
	// so the window scale stays large for the reading afterwards).
	_ = c.nc.(*net.TCPConn).SetWriteBuffer(8 << 10)
	_ = client.(*net.TCPConn).SetReadBuffer(32 << 10)
	if c.raw == nil {
		t.Fatal("no raw socket")
	}

	const n = 60
	frame := func(i int) string { return fmt.Sprintf(`{"i":%d,"x":"%s"}`, i, strings.Repeat("x", 10000+i)) }
	handedOver := false
	for i := range n {
		if !c.enqueue(ws.OpText, []byte(frame(i))) {
			t.Fatalf("frame %d not queued", i)
		}
		c.wmu.Lock()
		handedOver = handedOver || c.writing
		c.wmu.Unlock()
	}
	if !handedOver {
		t.Fatal("the kernel took 600 KB for a client that does not read: the writer was never needed")
	}

	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(client)
	for i := range n {
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Header.OpCode != ws.OpText || !f.Header.Fin || f.Header.Masked || string(f.Payload) != frame(i) {
			t.Fatalf("frame %d: %+v %.40q", i, f.Header, f.Payload)
		}
	}
	// The writer goes idle once it has written the last of it.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !writtenAll(c) {
		select {
		case <-deadline.C:
			t.Fatal("writer still busy after the client read everything")
		case <-tick.C:
		}
	}
	// Idle again: the next frame goes straight to the socket.
	if !c.enqueue(ws.OpText, []byte(`{"last":true}`)) {
		t.Fatal("last frame not queued")
	}
	if f, err := ws.ReadFrame(br); err != nil || string(f.Payload) != `{"last":true}` {
		t.Fatalf("last frame: %v %q", err, f.Payload)
	}
}

// TestPingSpread: a round of pings goes out in batches spread over the time
// given, every socket pinged once.
func TestPingSpread(t *testing.T) {
	e, _, _ := hotPath(t)
	sockets := socketPairs(t)
	const n = 2*pingBatch + 1 // three batches
	conns := make([]*conn, n)
	arrived := make(chan time.Time, n)
	for i := range conns {
		c, client := sockets(e)
		conns[i] = c
		go func() {
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := ws.ReadFrame(client)
			if err != nil || f.Header.OpCode != ws.OpPing {
				t.Errorf("want a ping: %v %+v", err, f.Header)
				arrived <- time.Time{}
				return
			}
			arrived <- time.Now()
		}()
	}
	const d = 300 * time.Millisecond // two gaps of d/4 between three batches
	start := time.Now()
	if !e.pingSpread(conns, d) {
		t.Fatal("pingSpread stopped")
	}
	var last time.Time
	for range n {
		if at := <-arrived; at.After(last) {
			last = at
		}
	}
	if span := last.Sub(start); span < d/2 {
		t.Errorf("the last of %d pings arrived %v after the first was sent, want at least %v", n, span, d/2)
	}
	for i, c := range conns {
		if !c.pinged.Load() {
			t.Errorf("conn %d not marked pinged", i)
		}
	}
}

// TestWriteFailedAfterTeardown: when the reader ends while a write is in
// flight, closing the socket is left to the writer; if that write then
// fails, the writer still closes it (no descriptor is leaked).
func TestWriteFailedAfterTeardown(t *testing.T) {
	e, _, _ := hotPath(t)
	c, _ := socketPairs(t)(e)
	e.connWG.Add(1)
	e.stats.connections.Add(1)
	c.wmu.Lock()
	c.writing = true // a write in flight
	c.wmu.Unlock()
	c.teardown()
	if c.raw.Control(func(uintptr) {}) != nil {
		t.Fatal("teardown closed the socket under a writer")
	}
	c.wmu.Lock()
	c.writeFailed()
	if err := c.raw.Control(func(uintptr) {}); err == nil {
		t.Fatal("socket still open after the failed write of an ended connection")
	}
}
