package edge_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// TestLostInTransit: frames that never reach the target's edge (a NATS
// server died with them in its buffers) are told to their sender. Every
// relayed frame carries its place on the sender's route to its target
// (Signal-Track); the target's edge that sees it jump reports the gap to
// the sender's edge, which sends its client an error frame naming the
// target and the count. The jump is made here by republishing a relayed
// frame as the fourth of its route, as NATS would have delivered it had
// the second and third been lost.
func TestLostInTransit(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	a := login(t, s.Edges[0].URL, "alice")
	b := login(t, s.Edges[1].URL, "bob")
	nc := s.Conn("spy")
	spy, err := nc.SubscribeSync(subject.User("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	send(t, a, `{"type":"candidate","name":"bob","candidate":1}`)
	expect(t, b, `{"type":"candidate","candidate":1}`)
	m, err := spy.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	seq, track := m.Header.Get(subject.HeaderSeq), m.Header.Get(subject.HeaderTrack)
	route, first, ok := strings.Cut(track, ":")
	sender := seq[:max(strings.LastIndexByte(seq, ':'), 0)]
	if !ok || first != "1" || sender == "" || m.Header.Get(subject.HeaderEdge) != s.Edges[0].ID {
		t.Fatalf("relayed frame's headers %v: want %s's edge, a sequence and the first frame of a route", m.Header, "alice")
	}
	forged := nats.Msg{Subject: m.Subject, Reply: m.Reply, Header: nats.Header{}, Data: []byte(`{"type":"candidate","candidate":4}`)}
	for k, v := range m.Header {
		forged.Header[k] = v
	}
	forged.Header.Set(subject.HeaderSeq, sender+":4")
	forged.Header.Set(subject.HeaderTrack, route+":4")
	if err := nc.PublishMsg(&forged); err != nil {
		t.Fatal(err)
	}
	expect(t, b, `{"type":"candidate","candidate":4}`)
	if m := recv(t, a); m.Type != "error" || m.Message != `2 messages to "bob" were lost in transit (a NATS server failed); send them again` {
		t.Fatalf("alice got %s, want an error frame for the 2 frames bob's edge never got", m.Raw)
	}
	waitStat(t, s.Edges[1].Edge, func(st edge.Stats) bool { return st.LostInTransit == 2 })
	// The route's real second and third frames, late, are delivered and
	// report nothing.
	send(t, a, `{"type":"candidate","name":"bob","candidate":2}`)
	send(t, a, `{"type":"candidate","name":"bob","candidate":3}`)
	expect(t, b, `{"type":"candidate","candidate":2}`)
	expect(t, b, `{"type":"candidate","candidate":3}`)
	expectNothing(t, a, 200*time.Millisecond)
	if n := s.Edges[1].Stats().LostInTransit; n != 2 {
		t.Fatalf("bob's edge counts %d lost, want 2", n)
	}
}

// TestNothingLostReported: a caller that sends to more peers than its
// route cache holds (every route begins again), on both edges, in turns,
// has every frame delivered in order and hears of no loss: the tracks of
// routes that begin again, and of frames on one edge and across two, add
// up.
func TestNothingLostReported(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	a := login(t, s.Edges[0].URL, "caller")
	const peers, rounds = 12, 6
	var ps []*client.Client
	for i := range peers {
		ps = append(ps, login(t, s.Edges[i%2].URL, fmt.Sprintf("p%d", i)))
	}
	for r := range rounds {
		for i := range peers {
			send(t, a, fmt.Sprintf(`{"type":"candidate","name":"p%d","candidate":%d}`, i, r))
			if r%2 == 1 {
				// Twice to some: routes that stay in the cache too.
				send(t, a, fmt.Sprintf(`{"type":"candidate","name":"p%d","candidate":%d}`, i, 100+r))
			}
		}
	}
	for _, p := range ps {
		for r := range rounds {
			expect(t, p, fmt.Sprintf(`{"type":"candidate","candidate":%d}`, r))
			if r%2 == 1 {
				expect(t, p, fmt.Sprintf(`{"type":"candidate","candidate":%d}`, 100+r))
			}
		}
	}
	expectNothing(t, a, 200*time.Millisecond)
	for _, e := range s.Edges {
		if n := e.Stats().LostInTransit; n != 0 {
			t.Fatalf("%s counts %d frames lost in transit; none was", e.ID, n)
		}
	}
}

// TestRelayWithoutTap: an edge whose NATS connection has no tap (TLS, a
// websocket, or natsconn.Config.NoTap) relays through nats.go alone, to
// and from an edge that has one, single frames and fragmented ones.
func TestRelayWithoutTap(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	nc, err := natsconn.Connect(natsconn.Config{URL: s.NATS.ClientURL(), Name: wire.EdgeConnName("plain", "plain-1"), NoTap: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if natsconn.TapOf(nc) != nil {
		t.Fatal("NoTap gave a tap")
	}
	url, _ := serveEdge(t, edge.Config{NC: nc, ID: "plain", Instance: "plain-1"})
	a := login(t, s.Edges[0].URL, "tapped")
	b := login(t, url, "plain")
	for i := range 20 {
		send(t, a, fmt.Sprintf(`{"type":"candidate","name":"plain","candidate":%d}`, i))
		send(t, b, fmt.Sprintf(`{"type":"candidate","name":"tapped","candidate":%d}`, i))
	}
	for i := range 20 {
		expect(t, b, fmt.Sprintf(`{"type":"candidate","candidate":%d}`, i))
		expect(t, a, fmt.Sprintf(`{"type":"candidate","candidate":%d}`, i))
	}
}
