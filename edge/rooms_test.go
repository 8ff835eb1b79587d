package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// joinRoom joins room and returns the other members from the reply (room
// frames of rooms c is in already are skipped).
func joinRoom(t testing.TB, c *client.Client, room string) []string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "join", "room": room})
	send(t, c, string(b))
	m := recv(t, c)
	for m.Type == "joined" || m.Type == "parted" {
		m = recv(t, c)
	}
	var rep struct {
		Type    string   `json:"type"`
		Success bool     `json:"success"`
		Room    string   `json:"room"`
		Users   []string `json:"users"`
	}
	if err := json.Unmarshal(m.Raw, &rep); err != nil || rep.Type != "join" || !rep.Success || rep.Room != room || rep.Users == nil {
		t.Fatalf("join %q: %s", room, m.Raw)
	}
	return rep.Users
}

// TestRooms: members on two edges join a room, see each other join, talk
// to the room, part; an end of a session parts its rooms; a mesh call's
// peers all get leave when one member goes.
func TestRooms(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	a := login(t, s.Edges[0].URL, "ann")
	b := login(t, s.Edges[1].URL, "ben")
	c := login(t, s.Edges[0].URL, "cat")
	if users := joinRoom(t, a, "lobby"); len(users) != 0 {
		t.Fatalf("first member sees %v", users)
	}
	if users := joinRoom(t, b, "lobby"); len(users) != 1 || users[0] != "ann" {
		t.Fatalf("second member sees %v", users)
	}
	expect(t, a, `{"type":"joined","room":"lobby","name":"ben"}`)
	if users := joinRoom(t, c, "lobby"); len(users) != 2 {
		t.Fatalf("third member sees %v", users)
	}
	expect(t, a, `{"type":"joined","room":"lobby","name":"cat"}`)
	expect(t, b, `{"type":"joined","room":"lobby","name":"cat"}`)

	// Room messages reach every other member, data byte for byte.
	send(t, b, `{"type":"message","room":"lobby","data":{ "text" : "hi all" }}`)
	for _, m := range []*client.Client{a, c} {
		expect(t, m, `{"type":"message","room":"lobby","name":"ben","data":{ "text" : "hi all" }}`)
	}
	expectNothing(t, b, 100*time.Millisecond) // not to the sender
	// App messages to one user.
	send(t, a, `{"type":"message","name":"ben","data":[1,"two",null]}`)
	expect(t, b, `{"type":"message","name":"ann","data":[1,"two",null]}`)

	// A mesh call: ann with ben and cat; ann goes, both get leave and
	// parted.
	call(t, a, b, "ann", "ben")
	call(t, a, c, "ann", "cat")
	_ = a.Close()
	for _, m := range []*client.Client{b, c} {
		got := map[string]bool{}
		for len(got) < 2 {
			got[string(recv(t, m).Raw)] = true
		}
		if !got[`{"type":"leave"}`] || !got[`{"type":"parted","room":"lobby","name":"ann"}`] {
			t.Fatalf("after ann left: %v", got)
		}
	}
	// Part, and a part of a room one is not in.
	send(t, b, `{"type":"part","room":"lobby"}`)
	expect(t, b, `{"type":"part","success":true,"room":"lobby"}`)
	expect(t, c, `{"type":"parted","room":"lobby","name":"ben"}`)
	send(t, b, `{"type":"part","room":"lobby"}`)
	expect(t, b, `{"type":"part","success":false,"room":"lobby","message":"not a member"}`)
	send(t, b, `{"type":"message","room":"lobby","data":1}`)
	if m := recv(t, b); m.Type != "error" || !strings.Contains(m.Message, "not a member") {
		t.Fatalf("message to a room one left: %s", m.Raw)
	}
	expectNothing(t, c, 100*time.Millisecond)
}

// TestRoomLimits: the room limit, the per-connection room limit, a second
// join, and bad rooms, each answered with the limit or rule that tripped.
func TestRoomLimits(t *testing.T) {
	s := stack.Start(t, stack.Options{
		Edges:    2,
		Edge:     edge.Config{MaxRooms: 2},
		Registry: registry.Config{MaxRoom: 2},
	})
	a := login(t, s.Edges[0].URL, "a")
	b := login(t, s.Edges[1].URL, "b")
	c := login(t, s.Edges[0].URL, "c")
	joinRoom(t, a, "small")
	joinRoom(t, b, "small")
	expect(t, a, `{"type":"joined","room":"small","name":"b"}`)
	send(t, c, `{"type":"join","room":"small"}`)
	if m := recv(t, c); m.Success || !strings.Contains(m.Message, "room is full") {
		t.Fatalf("join of a full room: %s", m.Raw)
	}
	send(t, a, `{"type":"join","room":"small"}`)
	expect(t, a, `{"type":"join","success":false,"room":"small","message":"already a member"}`)
	joinRoom(t, a, "second")
	send(t, a, `{"type":"join","room":"third"}`)
	if m := recv(t, a); m.Success || !strings.Contains(m.Message, "limit 2 per connection") {
		t.Fatalf("join over -max-rooms: %s", m.Raw)
	}
	for _, bad := range []string{`{"type":"join"}`, `{"type":"join","room":""}`, `{"type":"join","room":5}`, `{"type":"join","room":"a\u0000b"}`} {
		send(t, c, bad)
		if m := recv(t, c); m.Type != "join" || m.Success || m.Message == "" {
			t.Fatalf("%s: got %s", bad, m.Raw)
		}
	}
	for _, bad := range []string{`{"type":"message","room":"small"}`, `{"type":"message","room":7,"data":1}`, `{"type":"message","name":"a"}`} {
		send(t, c, bad)
		if m := recv(t, c); m.Type != "error" {
			t.Fatalf("%s: got %s", bad, m.Raw)
		}
	}
}

// TestHostileRooms: rooms named like wildcards and subjects are rooms like
// any other: none receives another room's traffic.
func TestHostileRooms(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	rooms := []string{"*", ">", "a.b", "room.>", "room.*", "user.>", " ", "=", "lobby"}
	members := make(map[string]*client.Client)
	for i, r := range rooms {
		c := login(t, s.Edges[i%2].URL, fmt.Sprint("m", i))
		joinRoom(t, c, r)
		members[r] = c
	}
	sender := login(t, s.Edges[0].URL, "sender")
	for _, r := range rooms {
		joinRoom(t, sender, r)
		if m := recv(t, members[r]); m.Type != "joined" {
			t.Fatalf("%q: got %s", r, m.Raw)
		}
	}
	for _, r := range rooms {
		b, _ := json.Marshal(map[string]any{"type": "message", "room": r, "data": r})
		send(t, sender, string(b))
	}
	for _, r := range rooms {
		m := recv(t, members[r])
		var got struct {
			Room string `json:"room"`
			Data string `json:"data"`
		}
		_ = json.Unmarshal(m.Raw, &got)
		if m.Type != "message" || got.Room != r || got.Data != r {
			t.Errorf("member of %q got %s", r, m.Raw)
		}
	}
	for _, r := range rooms {
		expectNothing(t, members[r], 50*time.Millisecond)
	}
}

// TestConcurrentJoins: two users on two edges join a room at the same
// moment. Each gets its join reply first, then hears of the other exactly
// once: listed in its reply, or in one joined after it (not both, as when
// the room's frames reached a member whose join was still waiting on the
// registry).
func TestConcurrentJoins(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	cs := []*client.Client{login(t, s.Edges[0].URL, "cj0"), login(t, s.Edges[1].URL, "cj1")}
	for round := range 20 {
		room := fmt.Sprint("cj-", round)
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SendRaw([]byte(`{"type":"join","room":"` + room + `"}`))
			}()
		}
		wg.Wait()
		listed := 0
		for i, c := range cs {
			me, other := fmt.Sprint("cj", i), fmt.Sprint("cj", 1-i)
			m := recv(t, c)
			var rep struct {
				Type    string   `json:"type"`
				Success bool     `json:"success"`
				Users   []string `json:"users"`
			}
			if err := json.Unmarshal(m.Raw, &rep); err != nil || rep.Type != "join" || !rep.Success {
				t.Fatalf("round %d: %s got %s first, want its join reply", round, me, m.Raw)
			}
			switch {
			case len(rep.Users) == 1 && rep.Users[0] == other:
				listed++
			case len(rep.Users) == 0:
				expect(t, c, `{"type":"joined","room":"`+room+`","name":"`+other+`"}`)
			default:
				t.Fatalf("round %d: %s's reply lists %v", round, me, rep.Users)
			}
		}
		if listed != 1 {
			t.Fatalf("round %d: %d replies list the other member, want exactly 1", round, listed)
		}
		// Nothing else about the room is on its way: each one's next
		// frame is the other's message.
		for i, c := range cs {
			send(t, c, fmt.Sprintf(`{"type":"message","room":"%s","data":%d}`, room, i))
		}
		for i, c := range cs {
			expect(t, c, fmt.Sprintf(`{"type":"message","room":"%s","name":"cj%d","data":%d}`, room, 1-i, 1-i))
		}
		send(t, cs[0], `{"type":"part","room":"`+room+`"}`)
		expect(t, cs[0], `{"type":"part","success":true,"room":"`+room+`"}`)
		expect(t, cs[1], `{"type":"parted","room":"`+room+`","name":"cj0"}`)
		send(t, cs[1], `{"type":"part","room":"`+room+`"}`)
		expect(t, cs[1], `{"type":"part","success":true,"room":"`+room+`"}`)
	}
}

// replyJSON answers m with the JSON of v.
func replyJSON(m *nats.Msg, v any) {
	body, _ := json.Marshal(v)
	_ = m.Respond(body)
}

// slowJoins stops s's registry and answers registry.join on nc with rep,
// each request only once release has been called (a registry the test
// holds up). asked waits for the first request; once it is there, so is
// the room interest its edge subscribed before asking.
func slowJoins(t *testing.T, s *stack.Stack, nc *nats.Conn, rep wire.JoinReply) (asked, release func()) {
	t.Helper()
	_ = s.Registry.Stop()
	came, released := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	t.Cleanup(release)
	fakeEndpoint(t, nc, subject.RegistryJoin, func(_ int, m *nats.Msg) {
		select {
		case came <- struct{}{}:
		default:
		}
		<-released
		replyJSON(m, rep)
	})
	asked = func() {
		t.Helper()
		select {
		case <-came:
		case <-time.After(wait):
			t.Fatal("the join request did not come")
		}
	}
	return asked, release
}

// TestJoinPendingBound: what a room sends while a join waits on the
// registry is held for the joiner up to the bounds (256 messages); the
// rest is dropped, counted, and the joiner told how many after its reply.
func TestJoinPendingBound(t *testing.T) {
	// One attempt of the join outlasts the test: no retries.
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{Rate: -1, RegistryTimeout: time.Minute}})
	a, b := login(t, s.Edges[0].URL, "pb-a"), login(t, s.Edges[1].URL, "pb-b")
	joinRoom(t, a, "busy")
	// From here on a registry that answers joins when the test says so.
	asked, release := slowJoins(t, s, s.Conn("slow-registry"), wire.JoinReply{OK: true, Users: []string{"pb-a"}})
	send(t, b, `{"type":"join","room":"busy"}`)
	asked() // b's seat is pending
	eb := s.Edges[1].Edge
	const sent = 300
	for i := range sent {
		send(t, a, fmt.Sprintf(`{"type":"message","room":"busy","data":%d}`, i))
	}
	waitFor(t, "frames dropped for the pending join", func() bool { return eb.Stats().Dropped == sent-256 })
	release()
	if m := recv(t, b); m.Type != "join" || !m.Success {
		t.Fatalf("first frame %s, want the join reply", m.Raw)
	}
	for i := range 256 {
		expect(t, b, fmt.Sprintf(`{"type":"message","room":"busy","name":"pb-a","data":%d}`, i))
	}
	if m := recv(t, b); m.Type != "error" || !strings.HasPrefix(m.Message, fmt.Sprintf(`%d frames of room "busy" sent while your join was waiting were dropped`, sent-256)) {
		t.Fatalf("after the held frames: %s", m.Raw)
	}
}

// TestJoinOfAnEndedSession: a session that ends (here: kicked) while its
// join waits on the registry gives the seat back once the join is through: the
// registry is asked to part it, and the edge no longer subscribes the
// room.
func TestJoinOfAnEndedSession(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{RegistryTimeout: time.Minute}})
	b := login(t, s.Edges[0].URL, "eo-b")
	nc := s.Conn("fake-registry")
	asked, release := slowJoins(t, s, nc, wire.JoinReply{OK: true, Users: []string{}})
	parts := make(chan wire.PartRequest, 4)
	fakeEndpoint(t, nc, subject.RegistryPart, func(_ int, m *nats.Msg) {
		var in wire.PartRequest
		_ = json.Unmarshal(m.Data, &in)
		parts <- in
		replyJSON(m, wire.PartReply{OK: true})
	})
	fakeEndpoint(t, nc, subject.RegistryLogout, func(_ int, m *nats.Msg) { replyJSON(m, wire.LogoutReply{OK: true}) })
	send(t, b, `{"type":"join","room":"gone"}`)
	asked()
	// The registry kicks the session meanwhile (as registry.kick would).
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	users, err := js.KeyValue(ctx, subject.UsersBucket)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := users.Get(ctx, names.Token("eo-b"))
	if err != nil {
		t.Fatal(err)
	}
	var entry wire.Entry
	_ = json.Unmarshal(kv.Value(), &entry)
	body, _ := json.Marshal(wire.Presence{Name: "eo-b", Edge: entry.Edge, Instance: entry.Instance, Session: entry.Session, Reason: events.ReasonKicked})
	if err := nc.Publish(subject.PresenceOffline(names.Token("eo-b")), body); err != nil {
		t.Fatal(err)
	}
	e := s.Edges[0].Edge
	waitFor(t, "the session ends", func() bool { return e.Stats().Users == 0 })
	release()
	select {
	case in := <-parts:
		if in.Room != "gone" || in.Name != "eo-b" {
			t.Fatalf("part request %+v", in)
		}
	case <-time.After(wait):
		t.Fatal("the ended session's seat was not given back to the registry")
	}
	waitFor(t, "the room unsubscribed", func() bool {
		_, err := nc.Request(subject.Room(names.Token("gone")), nil, time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})
}

// TestLastSeatAcrossEdges: two clients on two edges race for the last seat
// of a room, 50 rounds: exactly one wins each time.
func TestLastSeatAcrossEdges(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2, Registry: registry.Config{MaxRoom: 3}, Edge: edge.Config{MaxRooms: 64}})
	holders := []*client.Client{login(t, s.Edges[0].URL, "h0"), login(t, s.Edges[1].URL, "h1")}
	wins := [2]int{}
	for round := range 50 {
		room := fmt.Sprint("seat-", round)
		for _, h := range holders {
			joinRoom(t, h, room)
		}
		racers := []*client.Client{login(t, s.Edges[0].URL, fmt.Sprint("r0-", round)), login(t, s.Edges[1].URL, fmt.Sprint("r1-", round))}
		var wg sync.WaitGroup
		for _, c := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SendRaw([]byte(`{"type":"join","room":"` + room + `"}`))
			}()
		}
		wg.Wait()
		// Each racer's first frame is its reply (the room's frames wait
		// behind it).
		results := []client.Message{recv(t, racers[0]), recv(t, racers[1])}
		if results[0].Type != "join" || results[1].Type != "join" || results[0].Success == results[1].Success {
			t.Fatalf("round %d: %s and %s, want exactly one seat", round, results[0].Raw, results[1].Raw)
		}
		for i, r := range results {
			if r.Success {
				wins[i]++
			} else if !strings.Contains(r.Message, "room is full (limit 3 members") {
				t.Fatalf("round %d: the loser got %s", round, r.Raw)
			}
			_ = racers[i].Close()
		}
	}
	t.Logf("50 rounds of a race for the last seat across two edges: one winner each (edge 1 won %d, edge 2 %d)", wins[0], wins[1])
}

// TestPresence: a watcher on one edge sees a name's state now and every
// change: login on another edge, a held session (still online), its
// expiry, a plain logout; unwatch stops it.
func TestPresence(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{ResumeGrace: 500 * time.Millisecond}})
	w := login(t, s.Edges[0].URL, "watcher")
	send(t, w, `{"type":"watch","names":["zoe","yan"]}`)
	got := map[string]bool{}
	for range 2 {
		got[string(recv(t, w).Raw)] = true
	}
	if !got[`{"type":"presence","name":"zoe","online":false}`] || !got[`{"type":"presence","name":"yan","online":false}`] {
		t.Fatalf("initial presence: %v", got)
	}
	start := time.Now()
	z, _ := loginResumable(t, s.Edges[1].URL, "zoe")
	expect(t, w, `{"type":"presence","name":"zoe","online":true}`)
	t.Logf("presence: a login on one edge reached a watcher on another after %v", time.Since(start))
	_ = z.Abort() // held: still online
	expectNothing(t, w, 200*time.Millisecond)
	expect(t, w, `{"type":"presence","name":"zoe","online":false}`) // the grace ended
	y := login(t, s.Edges[0].URL, "yan")
	expect(t, w, `{"type":"presence","name":"yan","online":true}`)
	send(t, w, `{"type":"unwatch","names":["yan"]}`)
	_ = y.Close()
	expectNothing(t, w, 200*time.Millisecond)
	// A watch of a name online now says so; the limit is named.
	login(t, s.Edges[1].URL, "xia")
	send(t, w, `{"type":"watch","names":["xia"]}`)
	expect(t, w, `{"type":"presence","name":"xia","online":true}`)
	send(t, w, `{"type":"watch","names":"xia"}`)
	if m := recv(t, w); m.Type != "error" {
		t.Fatalf("watch with a string: %s", m.Raw)
	}
}

// TestWatchLimit: watching more names than -max-watch is refused, naming
// the limit.
func TestWatchLimit(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{MaxWatch: 2}})
	w := login(t, s.Edges[0].URL, "w")
	send(t, w, `{"type":"watch","names":["a","b","c"]}`)
	if m := recv(t, w); m.Type != "error" || !strings.Contains(m.Message, "limit 2 names") {
		t.Fatalf("over the watch limit: %s", m.Raw)
	}
}

// TestKick: registry.kick of a user on another edge: it gets an error frame
// with the reason and close 4003, its name is free at once, its peer gets
// leave and its rooms are parted.
func TestKick(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	victim := login(t, s.Edges[1].URL, "victim")
	peer := login(t, s.Edges[0].URL, "peer")
	joinRoom(t, victim, "club")
	joinRoom(t, peer, "club")
	expect(t, victim, `{"type":"joined","room":"club","name":"peer"}`)
	call(t, peer, victim, "peer", "victim")
	b, _ := json.Marshal(wire.KickRequest{Name: "victim", Reason: "terms of service"})
	start := time.Now()
	m, err := s.Conn("admin").Request(subject.RegistryKick, b, wait)
	if err != nil {
		t.Fatal(err)
	}
	var rep wire.KickReply
	if err := json.Unmarshal(m.Data, &rep); err != nil || !rep.OK || rep.Edge != "edge-2" {
		t.Fatalf("kick: %s %v", m.Data, err)
	}
	expect(t, victim, `{"type":"error","message":"kicked: terms of service"}`)
	<-victim.Done()
	if code, _ := victim.CloseStatus(); code != ws.StatusCode(4003) {
		t.Fatalf("kicked connection closed with %d, want 4003", code)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		got[string(recv(t, peer).Raw)] = true
	}
	if !got[`{"type":"leave"}`] || !got[`{"type":"parted","room":"club","name":"victim"}`] {
		t.Fatalf("the peer got %v", got)
	}
	t.Logf("kick: error frame, 4003, leave and parted within %v", time.Since(start))
	login(t, s.Edges[0].URL, "victim")
}
