package stack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/embed"
)

// A call set up through the signaling system with the Go client: alice
// offers, bob answers, a candidate follows, alice hangs up. The offer and
// answer are what a browser's RTCPeerConnection produces
// (RTCSessionDescription JSON); the system relays them byte for byte.
//
// The example runs the whole system in the process first (an embedded
// NATS server with JetStream, the registry and one edge on a free port),
// which is what "go run ./cmd/signal" does on port 9090, and what Start
// does for a test. (It lives here, above edge and registry, because
// services/client must not import them.)
func Example_call() {
	url, stop := startSystem()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	if _, err := alice.Login(ctx, "alice"); err != nil {
		log.Fatal(err)
	}
	bob, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	if _, err := bob.Login(ctx, "bob"); err != nil {
		log.Fatal(err)
	}

	// A second login with a taken name is refused.
	eve, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer eve.Close()
	_, err = eve.Login(ctx, "alice")
	fmt.Println("eve as alice:", err)

	// Any JSON value is relayed byte for byte: here, what a browser sends
	// (an RTCSessionDescription as JSON).
	offer := json.RawMessage(`{"type":"offer","sdp":"v=0\r\n..."}`)
	if err := alice.Offer("bob", offer); err != nil {
		log.Fatal(err)
	}
	m, err := bob.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob got %s from %s: %s\n", m.Type, m.Name, m.Offer)

	if err := bob.Answer(m.Name, json.RawMessage(`{"type":"answer","sdp":"v=0\r\n..."}`)); err != nil {
		log.Fatal(err)
	}
	cand := json.RawMessage(`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}`)
	if err := bob.Candidate(m.Name, cand); err != nil {
		log.Fatal(err)
	}
	for range 2 {
		m, err := alice.Recv(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("alice got %s\n", m.Raw)
	}

	// Messages to someone who is not online come back as an error frame.
	if err := alice.Offer("carol", offer); err != nil {
		log.Fatal(err)
	}
	m, err = alice.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("alice got %s: %s\n", m.Type, m.Message)

	if err := alice.Leave("bob"); err != nil {
		log.Fatal(err)
	}
	m, err = bob.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bob got %s\n", m.Raw)

	// Output:
	// eve as alice: client: login refused
	// bob got offer from alice: {"type":"offer","sdp":"v=0\r\n..."}
	// alice got {"type":"answer","answer":{"type":"answer","sdp":"v=0\r\n..."}}
	// alice got {"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}}
	// alice got error: user "carol" is not online
	// bob got {"type":"leave"}
}

// startSystem runs an embedded NATS server, the registry and an edge on a
// free loopback port, and returns the edge's URL and a function that stops
// everything in order.
func startSystem() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "signal-example-")
	if err != nil {
		log.Fatal(err)
	}
	ns, err := embed.Start(embed.Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	connect := func(name string) *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), nats.Name(name))
		if err != nil {
			log.Fatal(err)
		}
		return nc
	}

	rnc := connect("registry")
	reg, err := registry.New(context.Background(), registry.Config{NC: rnc, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	enc := connect("edge")
	e, err := edge.New(edge.Config{NC: enc, ID: "example", Listen: ln.Addr().String(), Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()

	return "ws://" + ln.Addr().String() + "/", func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
		enc.Close()
		_ = reg.Stop()
		rnc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}
