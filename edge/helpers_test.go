package edge_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/services/client"
)

// waitFor polls cond until it holds, and fails the test if it does not
// within wait; what names the state waited for in the failure.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			if cond() {
				return
			}
			t.Fatalf("%s: not within %v", what, wait)
		case <-tick.C:
		}
	}
}

// handedOff is how many relayed frames e has handed on to its sessions'
// sockets: the count of its relay latency histogram, observed as each
// frame from NATS goes to its session.
func handedOff(t testing.TB, e *edge.Edge) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "signal_edge_relay_latency_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no signal_edge_relay_latency_seconds metric")
	return 0
}

// waitClosed waits until c's connection has closed.
func waitClosed(t testing.TB, c *client.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("connection not closed")
	}
}

// serveEdge starts an edge with cfg (its logs discarded) on a loopback
// port for the duration of t, and returns its URL.
func serveEdge(t testing.TB, cfg edge.Config) (string, *edge.Edge) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	e, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return "ws://" + ln.Addr().String() + "/", e
}
