// Package natstest runs real NATS servers with JetStream for tests: no mocks.
package natstest

import (
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/embed"
)

// Server starts an embedded server with JetStream on a random loopback port
// for the duration of t. Set SIGNAL_TEST_NATS_LOGS=1 to see the server's log.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return ServerWith(t, embed.Config{})
}

// ServerWith is Server with cfg's settings; its Listen and StoreDir are
// filled in when zero.
func ServerWith(t testing.TB, cfg embed.Config) *server.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:-1"
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	cfg.Logs = cfg.Logs || os.Getenv("SIGNAL_TEST_NATS_LOGS") != ""
	s, err := embed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Conn connects to s for the duration of t.
func Conn(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
