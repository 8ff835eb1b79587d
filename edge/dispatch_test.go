package edge

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/subject"
)

// TestDispatchFull: when the dispatchers' channel is full, nats.go drops
// frames without saying whose; the loss is counted, and the session that
// lost frames is closed (1011) rather than left with a call that silently
// misses them.
func TestDispatchFull(t *testing.T) {
	s, e := newWithRegistry(t, Config{ID: "full", dispatchQueue: 1})
	bob, client := loggedIn(t, e, socketPairs(t), "bob")
	go func() { _, _ = io.Copy(io.Discard, client) }()
	pub := natstest.Conn(t, s)

	// Hold the session so that its dispatcher blocks, and send a burst.
	sess := bob.sess
	sess.mu.Lock()
	for range 200 {
		_ = pub.Publish(subject.User("bob"), []byte(`{"type":"candidate","candidate":1}`))
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := sess.sub.Dropped(); n == 0; n, _ = sess.sub.Dropped() {
		if time.Now().After(deadline) {
			sess.mu.Unlock()
			t.Fatal("nothing dropped")
		}
		_ = pub.Flush() // a round trip: the burst is on its way meanwhile
	}
	sess.mu.Unlock()
	for e.stats.dropped[dropDispatch].Load() == 0 || !bob.closing() {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, closing %v", e.stats.dropped[dropDispatch].Load(), bob.closing())
		}
		_ = pub.Flush()
	}
	t.Logf("frames lost in a full dispatcher: %d counted; the session is closed with 1011", e.stats.dropped[dropDispatch].Load())
}

// newWithRegistry starts a NATS server, a registry and an edge of cfg
// (its NC and Logger filled in) for the duration of t.
func newWithRegistry(tb testing.TB, cfg Config) (*server.Server, *Edge) {
	tb.Helper()
	s := withRegistry(tb)
	cfg.NC = natstest.Conn(tb, s)
	return s, newEdge(tb, cfg)
}

// withRegistry starts a NATS server with a registry on it for the
// duration of tb.
func withRegistry(tb testing.TB) *server.Server {
	tb.Helper()
	s := natstest.Server(tb)
	reg, err := registry.New(context.Background(), registry.Config{NC: natstest.Conn(tb, s), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = reg.Stop() })
	return s
}

// newEdge makes an edge of cfg (its logs discarded) that stops with tb.
func newEdge(tb testing.TB, cfg Config) *Edge {
	tb.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	e, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}

// closing reports whether a close frame is queued or the socket is gone.
func (c *conn) closing() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.closeSent || c.done
}

// TestLoginWhilePaused: while an edge that was frozen checks its sessions,
// a login gets its login reply (success false, and why), as every login
// does; other messages get the error frame.
func TestLoginWhilePaused(t *testing.T) {
	// No heartbeat after the first within the test: nothing clears the
	// state the test sets.
	_, e := newWithRegistry(t, Config{ID: "paused", Heartbeat: time.Hour})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	// The first heartbeat (at New) is in the edges bucket: the next one is
	// an hour away, and nothing clears the state set here.
	kv, err := e.js.KeyValue(ctx, subject.EdgesBucket)
	for err == nil {
		if _, err = kv.Get(ctx, "paused"); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no first heartbeat")
		}
		_ = e.nc.Flush() // a round trip between looks
		err = nil
	}
	if err != nil {
		t.Fatal(err)
	}
	e.suspect.Store(true)
	for _, tt := range []struct{ send, want string }{
		{`{"type":"offer","name":"x","offer":1}`, `{"type":"error","message":"` + errPaused + `"}`},
		{`{"type":"login","name":"frozen"}`, `{"type":"login","success":false,"message":"` + errPaused + `"}`},
	} {
		if err := c.SendRaw([]byte(tt.send)); err != nil {
			t.Fatal(err)
		}
		m, err := c.Recv(ctx)
		if err != nil || string(m.Raw) != tt.want {
			t.Fatalf("%s while paused: got %s, %v; want %s", tt.send, m.Raw, err, tt.want)
		}
	}
}

// TestVerifyKeepsOwnedNames: the check after a gap keeps a session whose
// entry in the users bucket is still the one its login made, and closes
// one whose entry is gone.
func TestVerifyKeepsOwnedNames(t *testing.T) {
	_, e := newWithRegistry(t, Config{ID: "verify"})
	kept, _ := loggedIn(t, e, socketPairs(t), "kept")
	gone, _ := loggedIn(t, e, socketPairs(t), "gone")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, subject.UsersBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, gone.sess.token); err != nil {
		t.Fatal(err)
	}
	if !e.verifySessions() {
		t.Fatal("not every session could be checked")
	}
	if kept.closing() || !gone.closing() {
		t.Fatalf("after the check: kept closing %v, gone closing %v; want false, true", kept.closing(), gone.closing())
	}
}
