package edge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/services/stack"
)

// TestDeadSocket: a client whose TCP connection stays open but which never
// answers pings (a half-open connection, a closed laptop lid) is dropped:
// its name is released and its peer gets leave.
func TestDeadSocket(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{PingAfter: 300 * time.Millisecond, PongTimeout: 300 * time.Millisecond, ResumeGrace: -1}})
	e := s.Edges[0]
	raw := rawDial(t, e.Edge.Stats, strings.TrimPrefix(strings.TrimSuffix(e.URL, "/"), "ws://"))
	rawSend(t, raw, `{"type":"login","name":"ghost"}`)
	peer := login(t, e.URL, "peer")
	start := time.Now()
	time.Sleep(100 * time.Millisecond)
	rawSend(t, raw, `{"type":"offer","name":"peer","offer":1}`)
	expect(t, peer, `{"type":"offer","offer":1,"name":"ghost"}`)
	// The test client answers pings by itself, so "peer" stays; the raw
	// one never reads, so it never answers.
	expect(t, peer, `{"type":"leave"}`)
	t.Logf("silent client dropped and peer told after %v", time.Since(start))
	if got := e.Stats().DeadSockets; got != 1 {
		t.Fatalf("dead sockets %d, want 1", got)
	}
	login(t, e.URL, "ghost")
	// The live client survived several ping rounds.
	send(t, peer, `{"type":"offer","name":"ghost","offer":2}`)
}

// TestStalledFrame: a client that starts a frame and goes silent is dropped
// once PongTimeout passes, long before the dead-socket check would find it;
// its name is released and its peer gets leave.
func TestStalledFrame(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{PingAfter: time.Minute, PongTimeout: 300 * time.Millisecond, ResumeGrace: time.Minute}})
	e := s.Edges[0]
	raw := rawDial(t, e.Edge.Stats, strings.TrimPrefix(strings.TrimSuffix(e.URL, "/"), "ws://"))
	rawSend(t, raw, `{"type":"login","name":"staller"}`)
	peer := login(t, e.URL, "peer")
	time.Sleep(100 * time.Millisecond)
	rawSend(t, raw, `{"type":"offer","name":"peer","offer":1}`)
	expect(t, peer, `{"type":"offer","offer":1,"name":"staller"}`)
	// The first bytes of a masked text frame of 100 bytes, then nothing.
	start := time.Now()
	if _, err := raw.Write([]byte{0x81, 0x80 | 100, 1, 2, 3, 4, 'x'}); err != nil {
		t.Fatal(err)
	}
	expect(t, peer, `{"type":"leave"}`)
	took := time.Since(start)
	t.Logf("stalled client dropped and peer told after %v", took)
	if took > 5*time.Second {
		t.Fatalf("dropped after %v: not by the frame timeout", took)
	}
	if got := e.Stats().DeadSockets; got != 1 {
		t.Fatalf("dead sockets %d, want 1", got)
	}
	login(t, e.URL, "staller") // released at once, not held for a resume
}
