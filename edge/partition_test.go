package edge_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/wire"
)

// proxy forwards TCP to target until cut; cut drops every connection and
// refuses new ones until heal.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// cutOff starts an edge whose NATS connection goes through a proxy that
// the test can cut, and returns its URL, the edge and the proxy.
func cutOff(t *testing.T, s *stack.Stack, cfg edge.Config) (string, *edge.Edge, *proxy) {
	t.Helper()
	px := newProxy(t, strings.TrimPrefix(s.NATS.ClientURL(), "nats://"))
	cfg.ID, cfg.Instance = "cut-off", "cut-off-1"
	nc, err := natsconn.Connect(natsconn.Config{URL: "nats://" + px.ln.Addr().String(), Name: wire.EdgeConnName(cfg.ID, cfg.Instance), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := natsconn.WaitConnected(ctx, nc); err != nil {
		t.Fatal(err)
	}
	cfg.NC = nc
	url, e := serveEdge(t, cfg)
	return url, e, px
}

// takeOver logs in as name on url, trying until the name is free.
func takeOver(t *testing.T, url, name string) *client.Client {
	t.Helper()
	deadline := time.After(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c := dial(t, url)
		send(t, c, `{"type":"login","name":"`+name+`"}`)
		if m := recv(t, c); m.Success {
			return c
		}
		_ = c.Abort()
		select {
		case <-deadline:
			t.Fatalf("%q never came free", name)
		case <-tick.C:
		}
	}
}

// TestPartitionedEdge cuts one edge off from NATS for longer than the
// registry's lease, with fencing off: the registry releases its user's
// name, someone else takes it on another edge, and when the cut-off edge
// comes back it closes its stale connection (4001) instead of serving the
// name twice.
func TestPartitionedEdge(t *testing.T) {
	s := stack.Start(t, stack.Options{
		Registry: registry.Config{Lease: time.Second, Sweep: 100 * time.Millisecond, DisconnectEvents: "-"},
		Edge:     edge.Config{Heartbeat: 200 * time.Millisecond},
	})
	other := s.Edges[0]
	url, _, px := cutOff(t, s, edge.Config{Heartbeat: 200 * time.Millisecond, FenceAfter: -1})
	old := login(t, url, "alice")

	px.cut()
	fresh := takeOver(t, other.URL, "alice")
	px.heal()
	select {
	case <-old.Done():
	case <-time.After(wait):
		t.Fatal("the stale connection was not closed after the edge came back")
	}
	if code, _ := old.CloseStatus(); code != 4001 {
		t.Fatalf("stale connection closed with %d, want 4001", code)
	}
	// The one alice left gets alice's messages.
	bob := login(t, other.URL, "bob")
	send(t, bob, `{"type":"offer","name":"alice","offer":1}`)
	expect(t, fresh, `{"type":"offer","offer":1,"name":"bob"}`)
}

// TestFence: an edge cut off from NATS closes its sessions (4001) once its
// heartbeats have failed for -fence-after, before the registry's lease
// lapses: the name is never served by two connections, even while the cut
// lasts.
func TestFence(t *testing.T) {
	const lease, fence = 3 * time.Second, 600 * time.Millisecond
	s := stack.Start(t, stack.Options{
		Registry: registry.Config{Lease: lease, Sweep: 100 * time.Millisecond, DisconnectEvents: "-"},
	})
	url, _, px := cutOff(t, s, edge.Config{Heartbeat: 200 * time.Millisecond, FenceAfter: fence})
	old := login(t, url, "alice")
	start := time.Now()
	px.cut()
	select {
	case <-old.Done():
	case <-time.After(wait):
		t.Fatal("not fenced")
	}
	fenced := time.Since(start)
	if code, _ := old.CloseStatus(); code != 4001 {
		t.Fatalf("fenced connection closed with %d, want 4001", code)
	}
	takeOver(t, s.Edges[0].URL, "alice")
	free := time.Since(start)
	px.heal()
	t.Logf("cut at 0: the cut-off edge closed its session after %v (fence %v), the registry freed the name after %v (lease %v)", fenced, fence, free, lease)
	if free < fenced {
		t.Fatalf("the name was free (%v) before its old connection closed (%v)", free, fenced)
	}
}

// TestShutdownWithoutNATS: SIGTERM of an edge whose NATS is gone, with
// users whose logouts cannot be sent: Shutdown returns within its context
// plus a moment, with the context's error, and leaves the names to the
// registry's lease.
func TestShutdownWithoutNATS(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	url, e, px := cutOff(t, s, edge.Config{RegistryTimeout: 2 * time.Second, FenceAfter: -1})
	var held []*client.Client
	for i := range 5 {
		held = append(held, login(t, url, fmt.Sprint("u", i)))
	}
	px.cut()
	const limit = 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	err := e.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("Shutdown with NATS gone: %v (context %v), err %v", took, limit, err)
	if took > limit+time.Second {
		t.Fatalf("Shutdown took %v, over its context (%v) plus a second", took, limit)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown returned %v, want the context's error", err)
	}
	for _, c := range held {
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatal("a client was left open")
		}
	}
}
