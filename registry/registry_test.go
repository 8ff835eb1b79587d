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

	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/subject"
)

func start(t *testing.T, nc *nats.Conn) *registry.Registry {
	t.Helper()
	r, err := registry.New(context.Background(), registry.Config{NC: nc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

func request[T any](t *testing.T, nc *nats.Conn, subj string, v any) T {
	t.Helper()
	b, _ := json.Marshal(v)
	m, err := nc.Request(subj, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
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

func TestLoginLogout(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	start(t, nc)
	login := func(name, session string) registry.LoginReply {
		return request[registry.LoginReply](t, nc, subject.RegistryLogin, registry.LoginRequest{Name: name, Edge: "e1", Instance: "i1", Session: session})
	}
	logout := func(name, session string) registry.LogoutReply {
		return request[registry.LogoutReply](t, nc, subject.RegistryLogout, registry.LogoutRequest{Name: name, Session: session})
	}

	if r := login("user.>", "s1"); !r.OK || r.Token != names.Token("user.>") {
		t.Fatalf("login: %+v", r)
	}
	if r := login("user.>", "s2"); r.OK || r.Reason != registry.ReasonTaken {
		t.Fatalf("second login: %+v", r)
	}
	// Another session cannot release it.
	if r := logout("user.>", "s2"); r.OK || r.Reason != registry.ReasonNotOwner {
		t.Fatalf("logout by another session: %+v", r)
	}
	if r := logout("user.>", "s1"); !r.OK {
		t.Fatalf("logout: %+v", r)
	}
	if r := logout("user.>", "s1"); r.OK || r.Reason != registry.ReasonNotFound {
		t.Fatalf("second logout: %+v", r)
	}
	// Free again; a stale logout of the old session does not remove the
	// new owner's entry.
	if r := login("user.>", "s3"); !r.OK {
		t.Fatalf("login after logout: %+v", r)
	}
	if r := logout("user.>", "s1"); r.OK {
		t.Fatalf("stale logout removed the new owner: %+v", r)
	}

	// The bucket holds exactly the one entry, under the token.
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), subject.UsersBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), names.Token("user.>"))
	if err != nil {
		t.Fatal(err)
	}
	var entry registry.Entry
	_ = json.Unmarshal(e.Value(), &entry)
	if entry.Name != "user.>" || entry.Session != "s3" || entry.Edge != "e1" {
		t.Fatalf("entry %+v", entry)
	}

	// Bad requests are service errors.
	for _, body := range []string{`not json`, `{"name":"","edge":"e","session":"s"}`, `{"name":"x"}`} {
		m, err := nc.Request(subject.RegistryLogin, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("%s: want a 400 error, got %q %s", body, m.Header.Get(micro.ErrorCodeHeader), m.Data)
		}
	}
}

// TestGuardedRelease: a release guarded by an old revision never removes a
// newer owner's entry, even when it races with logout and login.
func TestGuardedRelease(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	r := start(t, nc)
	ctx := context.Background()
	first, err := r.Login(ctx, registry.LoginRequest{Name: "n", Edge: "e", Session: "old"})
	if err != nil || !first.OK {
		t.Fatal(first, err)
	}
	if out, _ := r.Logout(ctx, registry.LogoutRequest{Name: "n", Session: "old"}); !out.OK {
		t.Fatal(out)
	}
	second, err := r.Login(ctx, registry.LoginRequest{Name: "n", Edge: "e", Session: "new"})
	if err != nil || !second.OK || second.Revision <= first.Revision {
		t.Fatal(second, err)
	}
	if out, _ := r.Logout(ctx, registry.LogoutRequest{Name: "n", Session: "old"}); out.OK {
		t.Fatal("old session released the new entry")
	}
}

// TestRace: two registries, many edges' worth of concurrent logins for the
// same names: exactly one winner per name.
func TestRace(t *testing.T) {
	s := natstest.Server(t)
	start(t, natstest.Conn(t, s))
	start(t, natstest.Conn(t, s))
	const names, contenders = 50, 8
	wins := make([]int, names)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range contenders {
		nc := natstest.Conn(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				b, _ := json.Marshal(registry.LoginRequest{Name: fmt.Sprint("name-", n), Edge: fmt.Sprint("edge-", c), Session: fmt.Sprint(c)})
				m, err := nc.Request(subject.RegistryLogin, b, 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				var out registry.LoginReply
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

// TestStopUnderLoad stops a registry while thousands of requests are in
// flight: no panic, and every request is answered (served or 503).
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
		b, _ := json.Marshal(registry.LoginRequest{Name: fmt.Sprint("load-", i), Edge: "e", Session: "s"})
		_ = nc.PublishRequest(subject.RegistryLogin, inbox, b)
	}
	_ = nc.Flush()
	time.Sleep(50 * time.Millisecond)
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		if _, err := sub.NextMsg(2 * time.Second); err != nil {
			break
		}
		got++
	}
	t.Logf("%d of %d requests answered before and during the stop", got, n)
	if got == 0 {
		t.Fatal("nothing answered")
	}
}

// TestLeaseLapse: when one edge instance stops heartbeating, exactly its
// names are released, each announced on presence.offline with the name,
// edge, instance and session it had; another instance's names stay.
func TestLeaseLapse(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	r, err := registry.New(context.Background(), registry.Config{
		NC: nc, Logger: slog.New(slog.DiscardHandler), Lease: 1500 * time.Millisecond, Sweep: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
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
		b, _ := json.Marshal(registry.EdgeLease{ID: edge, Instance: inst, At: time.Now()})
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
	kept := map[string]string{"carol": "i1", "dave": "i1"}
	lost := map[string]string{"alice": "s-alice", "bob ü": "s-bob", "user.>": "s-x"}
	for name := range kept {
		if rep := request[registry.LoginReply](t, nc, subject.RegistryLogin, registry.LoginRequest{Name: name, Edge: "e1", Instance: "i1", Session: "s-" + name}); !rep.OK {
			t.Fatalf("login %q: %+v", name, rep)
		}
	}
	for name, ses := range lost {
		if rep := request[registry.LoginReply](t, nc, subject.RegistryLogin, registry.LoginRequest{Name: name, Edge: "e2", Instance: "i2", Session: ses}); !rep.OK {
			t.Fatalf("login %q: %+v", name, rep)
		}
	}
	for n := len(lost); n > 0; n-- {
		m, err := offline.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("waiting for presence.offline: %v", err)
		}
		var o registry.Offline
		if err := json.Unmarshal(m.Data, &o); err != nil {
			t.Fatal(err)
		}
		ses, ok := lost[o.Name]
		if !ok || o.Session != ses || o.Edge != "e2" || o.Instance != "i2" || o.Reason != registry.ReasonLease ||
			m.Subject != subject.PresenceOffline(names.Token(o.Name)) {
			t.Fatalf("offline %s: %+v", m.Subject, o)
		}
		delete(lost, o.Name)
	}
	if m, err := offline.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("unexpected offline %s: %s", m.Subject, m.Data)
	}
	for name := range kept {
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
