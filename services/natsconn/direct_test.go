package natsconn

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// waitUntil polls cond every 10ms until it holds, or fails t after 10s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// TestDirectFollowsTheConnection: WriteDirect writes only on a connection
// whose handshake the server answered and that has not failed since
// (Direct); a server that goes away stops it at once, and the reconnected
// connection takes direct writes again.
func TestDirectFollowsTheConnection(t *testing.T) {
	s := startServer(t, &server.Options{Host: "127.0.0.1", Port: -1})
	port := s.Addr().(*net.TCPAddr).Port
	nc, err := Connect(Config{URL: s.ClientURL(), Name: "direct", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tap := TapOf(nc)
	if tap == nil {
		t.Fatal("no tap on a plain nats:// connection")
	}
	waitUntil(t, "direct writes", tap.Direct)
	gen := tap.Gen()
	observe := func(srv *server.Server) *nats.Subscription {
		t.Helper()
		oc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(oc.Close)
		sub, err := oc.SubscribeSync("direct.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := oc.Flush(); err != nil {
			t.Fatal(err)
		}
		return sub
	}
	pub := func(n int) error {
		data := fmt.Sprintf("m%d", n)
		return tap.WriteDirect(nc, []byte(fmt.Sprintf("PUB direct.test %d\r\n%s\r\n", len(data), data)))
	}
	sub := observe(s)
	if err := pub(1); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "m1" {
		t.Fatalf("direct publish: %v %v", m, err)
	}

	s.Shutdown()
	waitUntil(t, "direct writes to stop with the server", func() bool { return !tap.Direct() })
	if err := pub(2); err != ErrNoDirect {
		t.Fatalf("WriteDirect with the server gone: %v, want ErrNoDirect", err)
	}

	s2 := startServer(t, &server.Options{Host: "127.0.0.1", Port: port})
	waitUntil(t, "the reconnect", nc.IsConnected)
	waitUntil(t, "direct writes again", tap.Direct)
	if tap.Gen() == gen {
		t.Fatal("the reconnected connection has the generation of the first")
	}
	sub2 := observe(s2)
	if err := pub(3); err != nil {
		t.Fatal(err)
	}
	if m, err := sub2.NextMsg(5 * time.Second); err != nil || string(m.Data) != "m3" {
		t.Fatalf("direct publish after the reconnect: %v %v", m, err)
	}
}

// TestNoTapOnWebsocket: a ws:// URL (and tls://, wss://) gets no tap: the
// tap follows the plain NATS protocol only, and a tap that could never
// write directly would make the edge publish into nothing.
func TestNoTapOnWebsocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsPort := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	startServer(t, &server.Options{Host: "127.0.0.1", Port: -1,
		Websocket: server.WebsocketOpts{Host: "127.0.0.1", Port: wsPort, NoTLS: true}})
	url := fmt.Sprintf("ws://127.0.0.1:%d", wsPort)
	nc, err := Connect(Config{URL: url, Name: "ws", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitConnected(ctx, nc); err != nil {
		t.Fatal(err)
	}
	if TapOf(nc) != nil {
		t.Fatal("a websocket connection got a tap")
	}
	for _, u := range []string{"tls://a:4222", "wss://a", "ws://a"} {
		if plainURLs([]string{"nats://b", u}) {
			t.Errorf("%s taken for plain NATS", u)
		}
	}
	if !plainURLs([]string{"nats://a:4222", "127.0.0.1:4222", "NATS://b"}) {
		t.Error("plain URLs refused")
	}
}
