package edge_test

import (
	"context"
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

// TestPartitionedEdge cuts one edge off from NATS for longer than its lease:
// the registry releases its user's name, someone else takes it on another
// edge, and when the cut-off edge comes back it closes its stale connection
// (4001) instead of serving the name twice.
func TestPartitionedEdge(t *testing.T) {
	s := stack.Start(t, stack.Options{
		Registry: registry.Config{Lease: time.Second, Sweep: 100 * time.Millisecond},
		Edge:     edge.Config{Heartbeat: 200 * time.Millisecond},
	})
	other := s.Edges[0]
	px := newProxy(t, strings.TrimPrefix(s.NATS.ClientURL(), "nats://"))
	nc, err := natsconn.Connect(natsconn.Config{URL: "nats://" + px.ln.Addr().String(), Name: "cut-off", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := natsconn.WaitConnected(ctx, nc); err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{NC: nc, ID: "cut-off", Heartbeat: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = e.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	time.Sleep(300 * time.Millisecond) // a heartbeat or two
	old := login(t, "ws://"+ln.Addr().String()+"/", "alice")

	px.cut()
	// The registry releases alice once the lease lapses; then bob's edge
	// lets a new alice in.
	var fresh *client.Client
	deadline := time.Now().Add(wait)
	for {
		fresh = dial(t, other.URL)
		send(t, fresh, `{"type":"login","name":"alice"}`)
		if m := recv(t, fresh); m.Success {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cut-off edge's name was never released")
		}
		time.Sleep(100 * time.Millisecond)
	}
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
