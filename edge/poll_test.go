package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/embed"
	"github.com/natsrtc/signal/services/natsconn"
)

// compile returns frame as a masked client frame.
func compile(t testing.TB, frame string) []byte {
	t.Helper()
	b, err := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame([]byte(frame))))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStalledFrames: clients that send the start of a frame and go silent
// hold nothing the others need (the socket's reader waits for them, not
// the poller), and are disconnected PongTimeout later, counted as dead
// sockets; a frame that comes in pieces within the time is handled.
func TestStalledFrames(t *testing.T) {
	const pong = 500 * time.Millisecond
	s := stack.Start(t, stack.Options{Edge: edge.Config{PongTimeout: pong}})
	e := s.Edges[0]
	hostport := strings.TrimSuffix(strings.TrimPrefix(e.URL, "ws://"), "/")

	// 50 stallers, each a login frame cut in the middle of its header or
	// of its payload.
	start := time.Now()
	var stalled []net.Conn
	for i := range 50 {
		nc := rawDial(t, nil, hostport)
		f := compile(t, fmt.Sprintf(`{"type":"login","name":"staller-%d"}`, i))
		if _, err := nc.Write(f[:1+i%(len(f)-1)]); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, nc)
	}
	// Meanwhile a call goes on, and a frame written a byte at a time (a
	// login and an offer behind it, in pieces) is handled.
	a, b := login(t, e.URL, "calm-a"), login(t, e.URL, "calm-b")
	send(t, a, `{"type":"offer","name":"calm-b","offer":1}`)
	expect(t, b, `{"type":"offer","offer":1,"name":"calm-a"}`)
	nc := rawDial(t, nil, hostport)
	pieces := append(compile(t, `{"type":"login","name":"trickle"}`), compile(t, `{"type":"offer","name":"calm-b","offer":2}`)...)
	for _, c := range pieces {
		if _, err := nc.Write([]byte{c}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // pacing, so that each byte is a read of its own: not a wait
	}
	expect(t, b, `{"type":"offer","offer":2,"name":"trickle"}`)

	// The stallers are cut off after PongTimeout (and not long after).
	for _, nc := range stalled {
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("staller: %v, want the end of the stream", err)
		}
	}
	if d := time.Since(start); d < pong || d > pong+wait/2 {
		t.Fatalf("stallers cut off after %v, want about %v", d, pong)
	}
	waitStat(t, e.Edge, func(st edge.Stats) bool { return st.DeadSockets >= 50 })
	send(t, a, `{"type":"offer","name":"calm-b","offer":3}`)
	expect(t, b, `{"type":"offer","offer":3,"name":"calm-a"}`)
}

// TestFramesInOneRead: frames that arrive together are handled in order,
// whatever each asks for: a login (which waits on the registry) with the
// offers, a ping and a fragmented message behind it, in one write.
func TestFramesInOneRead(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	e := s.Edges[0]
	hostport := strings.TrimSuffix(strings.TrimPrefix(e.URL, "ws://"), "/")
	b := login(t, e.URL, "bulk-b")
	nc := rawDial(t, nil, hostport)
	var all bytes.Buffer
	all.Write(compile(t, `{"type":"login","name":"bulk-a"}`))
	for i := range 20 {
		all.Write(compile(t, fmt.Sprintf(`{"type":"offer","name":"bulk-b","offer":%d}`, i)))
	}
	ping, _ := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewPingFrame([]byte("p"))))
	all.Write(ping)
	part1 := ws.MaskFrameInPlace(ws.NewFrame(ws.OpText, false, []byte(`{"type":"offer","name":"bu`)))
	part2 := ws.MaskFrameInPlace(ws.NewFrame(ws.OpContinuation, true, []byte(`lk-b","offer":"last"}`)))
	_ = ws.WriteFrame(&all, part1)
	_ = ws.WriteFrame(&all, part2)
	if _, err := nc.Write(all.Bytes()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		expect(t, b, fmt.Sprintf(`{"type":"offer","offer":%d,"name":"bulk-a"}`, i))
	}
	expect(t, b, `{"type":"offer","offer":"last","name":"bulk-a"}`)
	// The client got its login reply, then the pong.
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(nc)
	f, err := ws.ReadFrame(br)
	if err != nil || !strings.HasPrefix(string(f.Payload), `{"type":"login","success":true`) {
		t.Fatalf("got %q, %v; want the login reply", f.Payload, err)
	}
	if f, err = ws.ReadFrame(br); err != nil || f.Header.OpCode != ws.OpPong {
		t.Fatalf("got %+v, %v; want a pong", f.Header, err)
	}
}

// TestInlineDelivery: frames for a session reach it from the NATS
// connection's read path (its tap takes them), also across edges; two
// sessions of one edge on one name (a resume there) go through nats.go's
// subscriptions, and get what is theirs.
func TestInlineDelivery(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	tap := natsconn.TapOf(s.Edges[1].NC)
	if tap == nil {
		t.Fatal("the stack's edge connection has no tap")
	}
	a, b := login(t, s.Edges[0].URL, "in-a"), login(t, s.Edges[1].URL, "in-b")
	before := tap.Taken()
	call(t, a, b, "in-a", "in-b")
	if tap.Taken() == before {
		t.Fatal("the offer did not come through the tap")
	}
	c, tok := loginResumable(t, s.Edges[1].URL, "in-c")
	send(t, a, `{"type":"offer","name":"in-c","offer":1}`)
	expect(t, c, `{"type":"offer","offer":1,"name":"in-a"}`)
	// The same name resumed on the same edge: the old session and the new
	// one subscribe it together for a moment.
	raw := rawDial(t, nil, hostport(s.Edges[1].URL))
	rawSend(t, raw, `{"type":"login","name":"in-c","resume":"`+tok+`"}`)
	if f := rawRecv(t, raw); !strings.Contains(string(f.Payload), `"success":true`) {
		t.Fatalf("resume: %s", f.Payload)
	}
	<-c.Done()
	before = tap.Taken()
	send(t, a, `{"type":"offer","name":"in-c","offer":2}`)
	if f := rawRecv(t, raw); string(f.Payload) != `{"type":"offer","offer":2,"name":"in-a"}` {
		t.Fatalf("after the resume: %s", f.Payload)
	}
	if tap.Taken() != before {
		t.Fatal("a session that shared its name on this edge got a frame through the tap")
	}
}

// TestTapAfterShutdown: an edge that stops gives its connection's tap back,
// so that the next edge on that connection (a restart in the same process)
// gets its users' frames through it again.
func TestTapAfterShutdown(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	old := s.Edges[1]
	tap := natsconn.TapOf(old.NC)
	if tap == nil {
		t.Fatal("the stack's edge connection has no tap")
	}
	a, b := login(t, s.Edges[0].URL, "ta-a"), login(t, old.URL, "ta-b")
	call(t, a, b, "ta-a", "ta-b") // the old edge's taker is on the tap
	_ = b.Close()
	expect(t, a, `{"type":"leave"}`)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := old.Edge.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	url, _ := serveEdge(t, edge.Config{NC: old.NC, ID: old.ID, Instance: old.ID + "-again"})
	b = login(t, url, "ta-b")
	before := tap.Taken()
	call(t, a, b, "ta-a", "ta-b")
	if tap.Taken() == before {
		t.Fatal("the restarted edge's frames did not come through the tap")
	}
}

// TestTapGivesUpMidConnection: when the tap meets what it does not follow
// (here a control line longer than its read buffer, which a server with a
// raised max_control_line passes on) while a call is relaying, it passes
// everything to nats.go from then on, and the frames of the call still
// arrive, each once and in order, both ways.
func TestTapGivesUpMidConnection(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{Rate: -1}, NATS: embed.Config{MaxControlLine: 64 << 10}})
	nb := s.Edges[1].NC
	tap := natsconn.TapOf(nb)
	if tap == nil || !tap.Direct() {
		t.Fatal("the stack's edge connection has no working tap")
	}
	a, b := login(t, s.Edges[0].URL, "gu-a"), login(t, s.Edges[1].URL, "gu-b")
	call(t, a, b, "gu-a", "gu-b")
	if tap.Taken() == 0 {
		t.Fatal("the call did not come through the tap")
	}
	// A message on the edge's reply subscription (which its registry
	// requests made) with a subject of 48 KiB.
	inbox := nb.NewRespInbox()
	long := inbox[:strings.LastIndexByte(inbox, '.')+1] + strings.Repeat("x", 48<<10)
	other := s.Conn("other")
	const n = 100
	for i := range n {
		if i == n/2 {
			if err := other.Publish(long, nil); err != nil {
				t.Fatal(err)
			}
			if err := other.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		send(t, a, fmt.Sprintf(`{"type":"offer","name":"gu-b","offer":%d}`, i))
	}
	for i := range n {
		expect(t, b, fmt.Sprintf(`{"type":"offer","offer":%d,"name":"gu-a"}`, i))
	}
	waitFor(t, "the tap gives up", func() bool { return !tap.Direct() })
	taken := tap.Taken()
	for i := range n {
		send(t, b, fmt.Sprintf(`{"type":"answer","name":"gu-a","answer":%d}`, i))
		send(t, a, fmt.Sprintf(`{"type":"candidate","name":"gu-b","candidate":%d}`, i))
	}
	for i := range n {
		expect(t, a, fmt.Sprintf(`{"type":"answer","answer":%d}`, i))
		expect(t, b, fmt.Sprintf(`{"type":"candidate","candidate":%d}`, i))
	}
	if got := tap.Taken(); got != taken {
		t.Fatalf("the tap took %d frames after it gave up", got-taken)
	}
}
