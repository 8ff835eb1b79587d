package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

func start(t *testing.T, nc *nats.Conn, cfg ...registry.Config) *registry.Registry {
	t.Helper()
	var c registry.Config
	if len(cfg) > 0 {
		c = cfg[0]
	}
	c.NC = nc
	c.Logger = slog.New(slog.DiscardHandler)
	r, err := registry.New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

func request[T any](t *testing.T, nc *nats.Conn, subj string, v any) T {
	t.Helper()
	b, _ := json.Marshal(v)
	m, err := nc.Request(subj, b, wait)
	if err != nil {
		t.Fatalf("%s: %v", subj, err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("%s: error %s %s", subj, code, m.Header.Get(micro.ErrorHeader))
	}
	var out T
	if err := json.Unmarshal(m.Data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func login(t *testing.T, nc *nats.Conn, name, edge, inst, session string) wire.LoginReply {
	t.Helper()
	return request[wire.LoginReply](t, nc, subject.RegistryLogin, wire.LoginRequest{Name: name, Edge: edge, Instance: inst, Session: session})
}

func logout(t *testing.T, nc *nats.Conn, name, session string) wire.LogoutReply {
	t.Helper()
	return request[wire.LogoutReply](t, nc, subject.RegistryLogout, wire.LogoutRequest{Name: name, Session: session})
}

func TestLoginLogout(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	if r := login(t, nc, "user.>", "e1", "i1", "s1"); !r.OK || r.Token != names.Token("user.>") {
		t.Fatalf("login: %+v", r)
	}
	if r := login(t, nc, "user.>", "e1", "i1", "s2"); r.OK || r.Reason != wire.ReasonTaken {
		t.Fatalf("second login: %+v", r)
	}
	// Another session cannot release it.
	if r := logout(t, nc, "user.>", "s2"); r.OK || r.Reason != wire.ReasonNotOwner {
		t.Fatalf("logout by another session: %+v", r)
	}
	if r := logout(t, nc, "user.>", "s1"); !r.OK {
		t.Fatalf("logout: %+v", r)
	}
	if r := logout(t, nc, "user.>", "s1"); r.OK || r.Reason != wire.ReasonNotFound {
		t.Fatalf("second logout: %+v", r)
	}
	// Free again; a stale logout of the old session does not remove the
	// new owner's entry.
	if r := login(t, nc, "user.>", "e1", "i1", "s3"); !r.OK {
		t.Fatalf("login after logout: %+v", r)
	}
	if r := logout(t, nc, "user.>", "s1"); r.OK {
		t.Fatalf("stale logout removed the new owner: %+v", r)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), subject.UsersBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), names.Token("user.>"))
	if err != nil {
		t.Fatal(err)
	}
	var entry wire.Entry
	_ = json.Unmarshal(e.Value(), &entry)
	if entry.Name != "user.>" || entry.Session != "s3" || entry.Edge != "e1" {
		t.Fatalf("entry %+v", entry)
	}
	// Bad requests are service errors.
	for _, body := range []string{`not json`, `{"name":"","edge":"e","session":"s"}`, `{"name":"x"}`} {
		m, err := nc.Request(subject.RegistryLogin, []byte(body), wait)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("%s: want a 400 error, got %q %s", body, m.Header.Get(micro.ErrorCodeHeader), m.Data)
		}
	}
}

// TestIdempotent: a login or logout retried (its reply was lost, or its
// registry died) takes or frees nothing twice.
func TestIdempotent(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	first := login(t, nc, "alice", "e", "i", "s1")
	again := login(t, nc, "alice", "e", "i", "s1")
	if !first.OK || !again.OK || again.Revision != first.Revision {
		t.Fatalf("retried login: %+v then %+v", first, again)
	}
	// A retried logout after a new owner took the name frees nothing.
	if r := request[wire.LogoutReply](t, nc, subject.RegistryLogout, wire.LogoutRequest{Name: "alice", Session: "s1", Revision: first.Revision}); !r.OK {
		t.Fatalf("logout: %+v", r)
	}
	if r := login(t, nc, "alice", "e", "i", "s2"); !r.OK {
		t.Fatalf("new owner: %+v", r)
	}
	if r := request[wire.LogoutReply](t, nc, subject.RegistryLogout, wire.LogoutRequest{Name: "alice", Session: "s1", Revision: first.Revision}); r.OK || r.Reason != wire.ReasonNotOwner {
		t.Fatalf("retried logout of the old session: %+v", r)
	}
}

func TestGuardedRelease(t *testing.T) {
	s := natstest.Server(t)
	r := start(t, natstest.Conn(t, s))
	ctx := context.Background()
	first, err := r.Login(ctx, wire.LoginRequest{Name: "n", Edge: "e", Session: "old"})
	if err != nil || !first.OK {
		t.Fatal(first, err)
	}
	if out, _ := r.Logout(ctx, wire.LogoutRequest{Name: "n", Session: "old"}); !out.OK {
		t.Fatal(out)
	}
	second, err := r.Login(ctx, wire.LoginRequest{Name: "n", Edge: "e", Session: "new"})
	if err != nil || !second.OK || second.Revision <= first.Revision {
		t.Fatal(second, err)
	}
	if out, _ := r.Logout(ctx, wire.LogoutRequest{Name: "n", Session: "old"}); out.OK {
		t.Fatal("old session released the new entry")
	}
}

// TestResumeRegistry: the resume token takes a held name over, once; a
// wrong token, or a token for another name, takes nothing; a resume whose
// name was released meanwhile is a fresh login.
func TestResumeRegistry(t *testing.T) {
	s := natstest.Server(t)
	r := start(t, natstest.Conn(t, s))
	ctx := context.Background()
	orig, _ := r.Login(ctx, wire.LoginRequest{Name: "m", Edge: "e1", Instance: "i1", Session: "s1", ResumeHash: wire.HashToken("tok1")})
	if !orig.OK {
		t.Fatal(orig)
	}
	r.Login(ctx, wire.LoginRequest{Name: "other", Edge: "e1", Instance: "i1", Session: "o1", ResumeHash: wire.HashToken("tokO")})
	for _, bad := range []string{"wrong", "tokO", ""} {
		out, err := r.Login(ctx, wire.LoginRequest{Name: "m", Edge: "e2", Instance: "i2", Session: "s2", Resume: bad})
		if err != nil || out.OK {
			t.Fatalf("resume with %q: %+v %v", bad, out, err)
		}
	}
	out, err := r.Login(ctx, wire.LoginRequest{Name: "m", Edge: "e2", Instance: "i2", Session: "s2", Resume: "tok1", ResumeHash: wire.HashToken("tok2")})
	if err != nil || !out.OK || !out.Resumed || out.Prev == nil || out.Prev.Session != "s1" || out.Prev.Edge != "e1" {
		t.Fatalf("resume: %+v %v", out, err)
	}
	// The old token is spent; the new one works; the old session's logout
	// frees nothing.
	if out, _ := r.Login(ctx, wire.LoginRequest{Name: "m", Edge: "e3", Session: "s3", Resume: "tok1"}); out.OK {
		t.Fatalf("spent token resumed: %+v", out)
	}
	if lo, _ := r.Logout(ctx, wire.LogoutRequest{Name: "m", Session: "s1", Revision: orig.Revision}); lo.OK {
		t.Fatalf("old session released the resumed name: %+v", lo)
	}
	// Released, then resumed with a valid token: a fresh login.
	if lo, _ := r.Logout(ctx, wire.LogoutRequest{Name: "m", Session: "s2"}); !lo.OK {
		t.Fatal(lo)
	}
	out, err = r.Login(ctx, wire.LoginRequest{Name: "m", Edge: "e4", Session: "s4", Resume: "tok2"})
	if err != nil || !out.OK || out.Resumed {
		t.Fatalf("resume of a released name: %+v %v", out, err)
	}
}

// TestRace: two registries, many edges' worth of concurrent logins for the
// same names: exactly one winner per name.
func TestRace(t *testing.T) {
	s := natstest.Server(t)
	start(t, natstest.Conn(t, s))
	start(t, natstest.Conn(t, s))
	const nnames, contenders = 50, 8
	wins := make([]int, nnames)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range contenders {
		nc := natstest.Conn(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range nnames {
				b, _ := json.Marshal(wire.LoginRequest{Name: fmt.Sprint("name-", n), Edge: fmt.Sprint("edge-", c), Session: fmt.Sprint(c)})
				m, err := nc.Request(subject.RegistryLogin, b, wait)
				if err != nil {
					t.Error(err)
					return
				}
				var out wire.LoginReply
				_ = json.Unmarshal(m.Data, &out)
				if out.OK {
					mu.Lock()
					wins[n]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for n, w := range wins {
		if w != 1 {
			t.Errorf("name-%d: %d winners", n, w)
		}
	}
}

// TestReadyOnNew: a request sent the moment New returns is served: the
// service's subscriptions are on the server by then.
func TestReadyOnNew(t *testing.T) {
	s := natstest.Server(t)
	client := natstest.Conn(t, s)
	for round := range 10 {
		r, err := registry.New(context.Background(), registry.Config{NC: natstest.Conn(t, s), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(wire.LoginRequest{Name: fmt.Sprint("ready-", round), Edge: "e", Session: "s"})
		if _, err := client.Request(subject.RegistryLogin, b, wait); err != nil {
			t.Fatalf("round %d: first request after New: %v", round, err)
		}
		if err := r.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStopUnderLoad stops a registry while thousands of requests are in
// flight: no panic, and every request is answered, served or 503.
func TestStopUnderLoad(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	r, err := registry.New(context.Background(), registry.Config{NC: natstest.Conn(t, s), Logger: slog.New(slog.DiscardHandler), Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, _ := nc.SubscribeSync(inbox)
	const n = 3000
	for i := range n {
		b, _ := json.Marshal(wire.LoginRequest{Name: fmt.Sprint("load-", i), Edge: "e", Session: "s"})
		_ = nc.PublishRequest(subject.RegistryLogin, inbox, b)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Stop once the registry is busy with them.
	served := 0
	for served == 0 {
		if _, err := sub.NextMsg(wait); err != nil {
			t.Fatal(err)
		}
		served++
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	ok, unavailable := served, 0
	for ok+unavailable < n {
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatalf("%d of %d requests answered (%d with 503): %v", ok+unavailable, n, unavailable, err)
		}
		if m.Header.Get(micro.ErrorCodeHeader) == wire.CodeUnavailable {
			unavailable++
		} else {
			ok++
		}
	}
	t.Logf("%d served, %d answered 503 during the stop", ok, unavailable)
}

// TestLeaseLapse: when one edge instance stops heartbeating, exactly its
// names are released, each announced on presence.offline with the name,
// edge, instance and session it had; another instance's names stay.
func TestLeaseLapse(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc, registry.Config{Lease: 1500 * time.Millisecond, Sweep: 50 * time.Millisecond})
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	edges, err := js.KeyValue(ctx, subject.EdgesBucket)
	if err != nil {
		t.Fatal(err)
	}
	users, err := js.KeyValue(ctx, subject.UsersBucket)
	if err != nil {
		t.Fatal(err)
	}
	beat := func(edge, inst string) {
		b, _ := json.Marshal(wire.EdgeLease{ID: edge, Instance: inst, At: time.Now()})
		if _, err := edges.Put(ctx, edge, b); err != nil {
			t.Error(err)
		}
	}
	beat("e1", "i1")
	beat("e2", "i2")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // e1 keeps heartbeating; e2 is silent from now on
		defer close(done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				beat("e1", "i1")
			}
		}
	}()
	defer func() { close(stop); <-done }()

	offline, err := nc.SubscribeSync(subject.PresenceOffline("*"))
	if err != nil {
		t.Fatal(err)
	}
	kept := []string{"carol", "dave"}
	lost := map[string]string{"alice": "s-alice", "bob ü": "s-bob", "user.>": "s-x"}
	for _, name := range kept {
		if rep := login(t, nc, name, "e1", "i1", "s-"+name); !rep.OK {
			t.Fatalf("login %q: %+v", name, rep)
		}
	}
	for name, ses := range lost {
		if rep := login(t, nc, name, "e2", "i2", ses); !rep.OK {
			t.Fatalf("login %q: %+v", name, rep)
		}
	}
	for n := len(lost); n > 0; n-- {
		m, err := offline.NextMsg(wait)
		if err != nil {
			t.Fatalf("waiting for presence.offline: %v", err)
		}
		var o wire.Presence
		if err := json.Unmarshal(m.Data, &o); err != nil {
			t.Fatal(err)
		}
		ses, ok := lost[o.Name]
		if !ok || o.Session != ses || o.Edge != "e2" || o.Instance != "i2" || o.Reason != events.ReasonEdgeLost ||
			m.Subject != subject.PresenceOffline(names.Token(o.Name)) {
			t.Fatalf("offline %s: %+v", m.Subject, o)
		}
		delete(lost, o.Name)
	}
	for _, name := range kept {
		if _, err := users.Get(ctx, names.Token(name)); err != nil {
			t.Errorf("%q, held by a live edge: %v", name, err)
		}
	}
	for _, name := range []string{"alice", "bob ü", "user.>"} {
		if _, err := users.Get(ctx, names.Token(name)); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%q, held by the lapsed edge: still there (%v)", name, err)
		}
	}
}

// fakeEdge is an edge instance as the registry sees one: a NATS
// connection named after it, answering its status endpoint.
func fakeEdge(t *testing.T, url, id, inst string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(wire.EdgeConnName(id, inst)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(subject.EdgeStatus(id), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"id":"` + id + `","instance":"` + inst + `"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc
}

// TestDisconnect: when an edge's NATS connection closes and the edge does
// not come back, its names are released at once (within a second, not a
// lease); an edge whose connection closes but that reconnects at once
// keeps its names.
func TestDisconnect(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc, registry.Config{Lease: time.Hour})
	offline, err := nc.SubscribeSync(subject.PresenceOffline("*"))
	if err != nil {
		t.Fatal(err)
	}

	dead := fakeEdge(t, s.ClientURL(), "dead", "i-dead")
	for i := range 5 {
		if r := login(t, nc, fmt.Sprint("d", i), "dead", "i-dead", fmt.Sprint("sd", i)); !r.OK {
			t.Fatal(r)
		}
	}
	alive := fakeEdge(t, s.ClientURL(), "alive", "i-alive")
	if r := login(t, nc, "a0", "alive", "i-alive", "sa0"); !r.OK {
		t.Fatal(r)
	}
	// The registry's view must have the names before the connections go.
	r2 := request[wire.UsersReply](t, nc, subject.RegistryUsers, wire.UsersRequest{})
	eventually(t, "the view to hold 6 names", func() bool {
		r2 = request[wire.UsersReply](t, nc, subject.RegistryUsers, wire.UsersRequest{})
		return len(r2.Users) == 6
	})

	start := time.Now()
	dead.Close()
	for n := 5; n > 0; n-- {
		m, err := offline.NextMsg(wait)
		if err != nil {
			t.Fatalf("names of the dead edge: %v", err)
		}
		var p wire.Presence
		_ = json.Unmarshal(m.Data, &p)
		if p.Edge != "dead" || p.Reason != events.ReasonEdgeLost {
			t.Fatalf("released %+v", p)
		}
	}
	took := time.Since(start)
	t.Logf("names of a closed edge connection released %v after the close", took)
	if took > 2*time.Second {
		t.Errorf("took %v; the lease is an hour, the disconnect events should have done it", took)
	}

	// "alive" loses its connection and comes back with another at once:
	// the registry asks it and keeps its name.
	alive.Close()
	fakeEdge(t, s.ClientURL(), "alive", "i-alive")
	if m, err := offline.NextMsg(2 * registry.DefaultDisconnectGrace); err == nil {
		t.Fatalf("a reconnected edge lost a name: %s", m.Data)
	}
	if r := login(t, nc, "a0", "x", "x", "other"); r.OK {
		t.Fatal("the reconnected edge's name was given away")
	}
}

// TestRooms: joins up to the limit, parts, the reply's member list, and a
// session's rooms parted when it logs out.
func TestRooms(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc, registry.Config{MaxRoom: 3})
	room := "a.b>*"
	roomSub, err := nc.SubscribeSync(subject.Room(names.Token(room)))
	if err != nil {
		t.Fatal(err)
	}
	join := func(name string) wire.JoinReply {
		return request[wire.JoinReply](t, nc, subject.RegistryJoin, wire.JoinRequest{Room: room, Name: name, Edge: "e", Session: "s-" + name})
	}
	for _, n := range []string{"u1", "u2", "u3"} {
		login(t, nc, n, "e", "i", "s-"+n)
	}
	if r := join("u1"); !r.OK || len(r.Users) != 0 {
		t.Fatalf("first join: %+v", r)
	}
	if r := join("u2"); !r.OK || len(r.Users) != 1 || r.Users[0] != "u1" {
		t.Fatalf("second join: %+v", r)
	}
	if r := join("u2"); !r.OK {
		t.Fatalf("retried join: %+v", r)
	}
	if r := join("u3"); !r.OK || len(r.Users) != 2 {
		t.Fatalf("third join: %+v", r)
	}
	if r := join("u4"); r.OK || r.Reason != wire.ReasonFull {
		t.Fatalf("join of a full room: %+v", r)
	}
	for _, want := range []string{`{"type":"joined","room":"a.b>*","name":"u1"}`, `{"type":"joined","room":"a.b>*","name":"u2"}`, `{"type":"joined","room":"a.b>*","name":"u3"}`} {
		m, err := roomSub.NextMsg(wait)
		if err != nil || string(m.Data) != want {
			t.Fatalf("room frame %s %v, want %s", m.Data, err, want)
		}
	}
	members := request[wire.RoomsReply](t, nc, subject.RegistryRooms, wire.RoomsRequest{Room: room})
	if len(members.Members) != 3 || members.Members[0].Name != "u1" {
		t.Fatalf("registry.rooms: %+v", members)
	}
	if r := request[wire.PartReply](t, nc, subject.RegistryPart, wire.PartRequest{Room: room, Name: "u2", Session: "s-u2"}); !r.OK {
		t.Fatalf("part: %+v", r)
	}
	if r := request[wire.PartReply](t, nc, subject.RegistryPart, wire.PartRequest{Room: room, Name: "u2", Session: "s-u2"}); r.OK {
		t.Fatalf("second part: %+v", r)
	}
	if m, _ := roomSub.NextMsg(wait); m == nil || string(m.Data) != `{"type":"parted","room":"a.b>*","name":"u2"}` {
		t.Fatalf("parted frame: %v", m)
	}
	// A logout parts the session's rooms.
	if r := logout(t, nc, "u1", "s-u1"); !r.OK {
		t.Fatal(r)
	}
	if m, _ := roomSub.NextMsg(wait); m == nil || string(m.Data) != `{"type":"parted","room":"a.b>*","name":"u1"}` {
		t.Fatalf("parted at logout: %v", m)
	}
	eventually(t, "u1 out of the room", func() bool {
		return len(request[wire.RoomsReply](t, nc, subject.RegistryRooms, wire.RoomsRequest{Room: room}).Members) == 1
	})
}

// TestLastSeatRace: two registry instances, two joins at once for the last
// seat of a room, 50 rounds: exactly one wins each round.
func TestLastSeatRace(t *testing.T) {
	s := natstest.Server(t)
	ra, rb := start(t, natstest.Conn(t, s)), start(t, natstest.Conn(t, s))
	ctx := context.Background()
	const max = registry.DefaultMaxRoom
	for round := range 50 {
		room := fmt.Sprint("race-", round)
		for i := range max - 1 {
			if r, err := ra.Join(ctx, wire.JoinRequest{Room: room, Name: fmt.Sprint("m", i), Edge: "e", Session: fmt.Sprint("s", i)}); err != nil || !r.OK {
				t.Fatalf("round %d seat %d: %+v %v", round, i, r, err)
			}
		}
		var wg sync.WaitGroup
		results := make([]wire.JoinReply, 2)
		for i, r := range []*registry.Registry{ra, rb} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				results[i], err = r.Join(ctx, wire.JoinRequest{Room: room, Name: fmt.Sprint("racer", i), Edge: "e", Session: fmt.Sprint("r", i)})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if results[0].OK == results[1].OK {
			t.Fatalf("round %d: results %+v and %+v, want exactly one seat", round, results[0], results[1])
		}
	}
}

// TestAdmin: registry.users pages through online users; registry.kick
// releases a name at once and announces it with the reason.
func TestAdmin(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	for _, n := range []string{"ann", "bob", "bea", "carl", "李"} {
		login(t, nc, n, "e1", "i1", "s-"+n)
	}
	var page wire.UsersReply
	eventually(t, "5 users", func() bool {
		page = request[wire.UsersReply](t, nc, subject.RegistryUsers, wire.UsersRequest{})
		return len(page.Users) == 5
	})
	page = request[wire.UsersReply](t, nc, subject.RegistryUsers, wire.UsersRequest{Prefix: "b", Limit: 1})
	if len(page.Users) != 1 || page.Users[0].Name != "bea" || page.Next != "bea" || page.Users[0].Edge != "e1" {
		t.Fatalf("first page: %+v", page)
	}
	page = request[wire.UsersReply](t, nc, subject.RegistryUsers, wire.UsersRequest{Prefix: "b", After: page.Next, Limit: 1})
	if len(page.Users) != 1 || page.Users[0].Name != "bob" {
		t.Fatalf("second page: %+v", page)
	}
	offline, _ := nc.SubscribeSync(subject.PresenceOffline(names.Token("bob")))
	if r := request[wire.KickReply](t, nc, subject.RegistryKick, wire.KickRequest{Name: "bob", Reason: "spam"}); !r.OK || r.Edge != "e1" {
		t.Fatalf("kick: %+v", r)
	}
	m, err := offline.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	var p wire.Presence
	_ = json.Unmarshal(m.Data, &p)
	if p.Reason != events.ReasonKicked || p.Message != "spam" || p.Session != "s-bob" {
		t.Fatalf("kick announced as %+v", p)
	}
	if r := login(t, nc, "bob", "e2", "i2", "new"); !r.OK {
		t.Fatalf("kicked name not free: %+v", r)
	}
	if r := request[wire.KickReply](t, nc, subject.RegistryKick, wire.KickRequest{Name: "nobody"}); r.OK {
		t.Fatalf("kick of nobody: %+v", r)
	}
}

// TestEvents: logins, logouts, joins and parts are in SIGNAL_EVENTS, in
// order, with their fields.
func TestEvents(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	login(t, nc, "eve", "e1", "i1", "s1")
	request[wire.JoinReply](t, nc, subject.RegistryJoin, wire.JoinRequest{Room: "r", Name: "eve", Edge: "e1", Session: "s1"})
	request[wire.LogoutReply](t, nc, subject.RegistryLogout, wire.LogoutRequest{Name: "eve", Session: "s1", Reason: events.ReasonDrop})
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.All}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ subj, kind, reason, room string }{
		{"events.login.eve", events.KindLogin, "", ""},
		{"events.join.eve", events.KindJoin, "", "r"},
		{"events.logout.eve", events.KindLogout, events.ReasonDrop, ""},
		{"events.part.eve", events.KindPart, events.ReasonDrop, "r"},
	}
	for _, w := range want {
		m, err := cons.Next(jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatalf("waiting for %s: %v", w.subj, err)
		}
		var ev events.Event
		_ = json.Unmarshal(m.Data(), &ev)
		if m.Subject() != w.subj || ev.Kind != w.kind || ev.Reason != w.reason || ev.Room != w.room || ev.Name != "eve" || ev.Edge != "e1" || ev.Time.IsZero() {
			t.Fatalf("event %s %s, want %+v", m.Subject(), m.Data(), w)
		}
	}
}

// TestConfig: values that would make the registry refuse everything fail
// New with a clear error.
func TestConfig(t *testing.T) {
	s := natstest.Server(t)
	for _, cfg := range []registry.Config{{Workers: -1}, {MaxRoom: -2}, {Lease: -time.Second}} {
		cfg.NC = natstest.Conn(t, s)
		if _, err := registry.New(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

// TestExpiredLogin: a login request the registry takes up long after the
// edge stopped waiting for it (it sat in a queue) takes nothing.
func TestExpiredLogin(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	b, _ := json.Marshal(wire.LoginRequest{Name: "late", Edge: "e", Session: "s", Deadline: time.Now().Add(-10 * time.Second)})
	m, err := nc.Request(subject.RegistryLogin, b, wait)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != wire.CodeExpired {
		t.Fatalf("an expired login: %q %s", code, m.Data)
	}
	if r := login(t, nc, "late", "e2", "i2", "s2"); !r.OK {
		t.Fatalf("the name was taken by an expired login: %+v", r)
	}
}
