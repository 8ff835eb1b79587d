// Package stack runs the whole signaling system in-process for tests and
// tools: a real NATS server with JetStream (the accounts of package embed,
// so that the registry hears of disconnects), the registry, and any number
// of edges on random loopback ports, each service on its own NATS
// connection, named as the binaries name theirs.
//
// It assembles edge and registry, so it sits above both (under edge/ for
// want of a top-level place); neither imports it, and it is for this
// module's tests and tools, not for other modules.
package stack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/embed"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/wire"
)

// Options of a Stack. Zero values select the defaults beside them.
type Options struct {
	// Edges to start. Zero: 1.
	Edges int
	// Edge is the template of every edge's configuration; NC, ID and Listen
	// are filled in.
	Edge edge.Config
	// Registry is the template of the registry's configuration; NC is
	// filled in.
	Registry registry.Config
	// NATS is the template of the NATS server's configuration; its Listen
	// and StoreDir are filled in when zero.
	NATS embed.Config
	// Logger for the services; zero: discard.
	Logger *slog.Logger
}

// Stack is a running system.
type Stack struct {
	NATS     *server.Server
	Registry *registry.Registry
	Edges    []*Edge
	t        testing.TB
	opts     Options
}

// Edge is one running edge.
type Edge struct {
	*edge.Edge
	ID  string
	URL string // ws://127.0.0.1:port/
	NC  *nats.Conn
	ln  net.Listener
}

// Start starts a stack for the duration of t.
func Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	if opts.Edges == 0 {
		opts.Edges = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{NATS: natstest.ServerWith(t, opts.NATS), t: t, opts: opts}
	rc := opts.Registry
	rc.NC = s.Conn("registry")
	rc.Logger = opts.Logger
	reg, err := registry.New(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	s.Registry = reg
	t.Cleanup(func() { _ = reg.Stop() })
	for i := range opts.Edges {
		s.AddEdge(fmt.Sprintf("edge-%d", i+1))
	}
	return s
}

// Conn opens a NATS connection for the duration of the test.
func (s *Stack) Conn(name string) *nats.Conn {
	s.t.Helper()
	nc, err := natsconn.Connect(natsconn.Config{URL: s.NATS.ClientURL(), Name: name, Logger: s.opts.Logger})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsconn.WaitConnected(ctx, nc); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// AddEdge starts one more edge with the given id.
func (s *Stack) AddEdge(id string) *Edge {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	cfg := s.opts.Edge
	cfg.Instance = fmt.Sprintf("%s-%d", id, len(s.Edges)+1)
	cfg.NC = s.Conn(wire.EdgeConnName(id, cfg.Instance))
	cfg.ID = id
	cfg.Listen = ln.Addr().String()
	cfg.Logger = s.opts.Logger
	e, err := edge.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()
	ed := &Edge{Edge: e, ID: id, URL: "ws://" + ln.Addr().String() + "/", NC: cfg.NC, ln: ln}
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	s.Edges = append(s.Edges, ed)
	return ed
}
