package edge_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/events"
)

// TestCallEvents: the edges add call_start (an answer relayed) and
// call_end (leave to a peer, or an end of either side) to the stream in which the
// registry records logins, logouts, joins and parts.
func TestCallEvents(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	a := login(t, s.Edges[0].URL, "caller")
	b := login(t, s.Edges[1].URL, "callee")
	call(t, a, b, "caller", "callee")
	send(t, a, `{"type":"leave","name":"callee"}`)
	expect(t, b, `{"type":"leave"}`)
	// A leave outside a call (again, or to someone never called) is
	// relayed, and ends no call.
	send(t, a, `{"type":"leave","name":"callee"}`)
	expect(t, b, `{"type":"leave"}`)
	call(t, a, b, "caller", "callee")
	_ = b.Close()
	expect(t, a, `{"type":"leave"}`)

	cons := callEventsConsumer(t, s)
	want := []struct{ subj, name, peer, reason string }{
		{"events.call_start.callee", "callee", "caller", ""},
		{"events.call_end.caller", "caller", "callee", events.ReasonLeave},
		{"events.call_start.callee", "callee", "caller", ""},
		{"events.logout.callee", "callee", "", events.ReasonClose},
		{"events.call_end.callee", "callee", "caller", events.ReasonClose},
	}
	// The stream keeps the order of each subject. Events of different
	// subjects come from different processes (the callee's edge, the
	// caller's, the registry) and may land in either order when they
	// happen close together: each is checked against the next one expected
	// on its own subject.
	next := map[string][]int{}
	for i, w := range want {
		next[w.subj] = append(next[w.subj], i)
	}
	for range want {
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatalf("waiting for the rest of %+v: %v", next, err)
		}
		q := next[m.Subject()]
		if len(q) == 0 {
			t.Fatalf("unexpected event %s %s", m.Subject(), m.Data())
		}
		w := want[q[0]]
		next[m.Subject()] = q[1:]
		var ev events.Event
		_ = json.Unmarshal(m.Data(), &ev)
		if ev.Name != w.name || ev.Peer != w.peer || ev.Reason != w.reason || ev.Edge == "" {
			t.Fatalf("got %s %s, want %+v", m.Subject(), m.Data(), w)
		}
	}
}

// TestNoCallEvents: with NoCallEvents (-call-events=false) a call leaves no
// call event in the stream; the registry's own events still come.
func TestNoCallEvents(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{NoCallEvents: true}})
	a := login(t, s.Edges[0].URL, "caller")
	b := login(t, s.Edges[1].URL, "callee")
	call(t, a, b, "caller", "callee")
	send(t, a, `{"type":"leave","name":"callee"}`)
	expect(t, b, `{"type":"leave"}`)
	_ = b.Close()

	cons := callEventsConsumer(t, s)
	// The logout comes after the call's answer and leave: had they made
	// events, those would come first.
	m, err := cons.Next(jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatalf("waiting for the logout: %v", err)
	}
	if m.Subject() != "events.logout.callee" {
		t.Fatalf("got %s %s, want only the registry's logout", m.Subject(), m.Data())
	}
}

// callEventsConsumer reads the call events and logouts of the stream, from
// its start.
func callEventsConsumer(t *testing.T, s *stack.Stack) jetstream.Consumer {
	t.Helper()
	js, _ := jetstream.New(s.Conn("backend"))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"events.call_start.>", "events.call_end.>", "events.logout.>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cons
}
