package edge_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// fakeRegistry answers registry.login on nc with reply(n) for the n-th
// request (from 1).
func fakeRegistry(t *testing.T, nc *nats.Conn, reply func(n int, m *nats.Msg)) {
	t.Helper()
	fakeEndpoint(t, nc, subject.RegistryLogin, reply)
}

// fakeEndpoint answers the registry endpoint subj on nc, in the registry's
// queue group, with reply(n) for the n-th request (from 1), for the
// duration of t.
func fakeEndpoint(t *testing.T, nc *nats.Conn, subj string, reply func(n int, m *nats.Msg)) {
	t.Helper()
	var n atomic.Int32
	sub, err := nc.QueueSubscribe(subj, subject.RegistryGroup, func(m *nats.Msg) { reply(int(n.Add(1)), m) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func respondError(m *nats.Msg, code, desc string) {
	_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.ErrorCodeHeader: {code}, wire.ErrorHeader: {desc}}})
}

// bareEdge starts an edge on a NATS server with no registry.
func bareEdge(t *testing.T, cfg edge.Config) (url string, nc *nats.Conn) {
	t.Helper()
	s := natstest.Server(t)
	cfg.NC = natstest.Conn(t, s)
	cfg.ID = "bare"
	url, _ = serveEdge(t, cfg)
	return url, natstest.Conn(t, s)
}

// TestRegistryReplies: the edge retries a login that a stopping registry
// answered with 503 (another instance, or a moment later) within its
// registry timeout; a 400 and no registry at all are refused logins with a
// message; none leaves the client without a login reply.
func TestRegistryReplies(t *testing.T) {
	url, nc := bareEdge(t, edge.Config{RegistryTimeout: 2 * time.Second})
	fakeRegistry(t, nc, func(n int, m *nats.Msg) {
		var req wire.LoginRequest
		_ = json.Unmarshal(m.Data, &req)
		switch {
		case req.Name == "bad":
			respondError(m, wire.CodeBadRequest, "no such thing")
		case req.Name == "lost":
			// The registry dies with the request: no answer.
		case n%2 == 1:
			respondError(m, wire.CodeUnavailable, "registry stopping, retry")
		default:
			b, _ := json.Marshal(wire.LoginReply{OK: true, Token: req.Name, Revision: uint64(n)})
			_ = m.Respond(b)
		}
	})
	c := dial(t, url)
	send(t, c, `{"type":"login","name":"retried"}`)
	expectLoginOK(t, c)
	c2 := dial(t, url)
	send(t, c2, `{"type":"login","name":"bad"}`)
	expectLoginRefused(t, c2, "login failed: no such thing")
	start := time.Now()
	send(t, c2, `{"type":"login","name":"lost"}`)
	expectLoginRefused(t, c2, "login failed: the registry did not answer")
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("an unanswered login took %v, over the registry timeout (2s)", took)
	}
}

// TestNoRegistry: with no registry subscribed at all, a login fails fast
// with a clear message.
func TestNoRegistry(t *testing.T) {
	url, _ := bareEdge(t, edge.Config{})
	c := dial(t, url)
	start := time.Now()
	send(t, c, `{"type":"login","name":"alone"}`)
	expectLoginRefused(t, c, "login failed: no registry is reachable")
	t.Logf("no registry: refused after %v", time.Since(start))
}

// TestConfigRefused: values that would make the edge refuse everything
// fail New with ErrConfig.
func TestConfigRefused(t *testing.T) {
	s := natstest.Server(t)
	for _, cfg := range []edge.Config{
		{MaxLogins: -1}, {MaxCandidates: -1}, {WriteQueue: -1}, {MaxFrameSize: -1},
		{ResumeBytes: 1 << 30}, {MaxRooms: -1}, {MaxWatch: -3},
	} {
		cfg.NC, cfg.ID = natstest.Conn(t, s), "x"
		if _, err := edge.New(cfg); !errors.Is(err, edge.ErrConfig) {
			t.Errorf("%+v: err %v, want ErrConfig", cfg, err)
		}
	}
}

// TestRouteCache: a client that sends to several peers in turn (a mesh
// call) looks each one up once, not once per message.
func TestRouteCache(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	e := s.Edges[0]
	a := login(t, e.URL, "a")
	peers := []string{"p1", "p2", "p3", "p4"}
	for _, p := range peers {
		login(t, e.URL, p)
	}
	before := e.Stats().Lookups
	for i := range 40 {
		send(t, a, fmt.Sprintf(`{"type":"candidate","name":%q,"candidate":%d}`, peers[i%len(peers)], i))
	}
	waitStat(t, e.Edge, func(st edge.Stats) bool { return st.Relayed >= 40 })
	if n := e.Stats().Lookups - before; n != uint64(len(peers)) {
		t.Fatalf("%d lookups for 40 messages to %d peers, want %d", n, len(peers), len(peers))
	}
}

// TestLoginDuringShutdown: a login whose registry reply arrives after the
// edge began to stop logs itself out (the name does not stay taken until
// the lease), and its client gets a refused login.
func TestLoginDuringShutdown(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	e, err := edge.New(edge.Config{NC: natstest.Conn(t, s), ID: "stopping", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()
	asked := make(chan *nats.Msg, 1)
	fakeRegistry(t, nc, func(_ int, m *nats.Msg) { asked <- m })
	logouts, err := nc.SubscribeSync(subject.RegistryLogout)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, "ws://"+ln.Addr().String()+"/")
	send(t, c, `{"type":"login","name":"late"}`)
	req := <-asked
	stopped := make(chan error, 1)
	go func() { stopped <- e.Shutdown(t.Context()) }()
	// The edge is stopping (it sends its clients 1001); now the registry
	// answers.
	waitStat(t, e, func(st edge.Stats) bool { return st.Connections == 1 })
	<-c.Done()
	var lr wire.LoginRequest
	_ = json.Unmarshal(req.Data, &lr)
	b, _ := json.Marshal(wire.LoginReply{OK: true, Token: "late", Revision: 7})
	_ = req.Respond(b)
	m, err := logouts.NextMsg(wait)
	if err != nil {
		t.Fatalf("the late login did not log itself out: %v", err)
	}
	var lo wire.LogoutRequest
	if err := json.Unmarshal(m.Data, &lo); err != nil || lo.Name != "late" || lo.Session != lr.Session || lo.Revision != 7 {
		t.Fatalf("logout %s, want the late login's session %s at revision 7", m.Data, lr.Session)
	}
	_ = m.Respond([]byte(`{"ok":true}`))
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestRegistryDiesMidRequest: a registry instance that takes a login and
// dies with it: the edge's attempt times out and the next one goes to
// another instance; the login succeeds, once.
func TestRegistryDiesMidRequest(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{RegistryTimeout: 2 * time.Second}})
	doomed := s.Conn("doomed-registry")
	took := make(chan string, 1)
	if _, err := doomed.QueueSubscribe(subject.RegistryLogin, subject.RegistryGroup, func(m *nats.Msg) {
		var req wire.LoginRequest
		_ = json.Unmarshal(m.Data, &req)
		select {
		case took <- req.Name:
		default:
		}
		go doomed.Close() // dies with the request, unanswered
	}); err != nil {
		t.Fatal(err)
	}
	if err := doomed.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		name := fmt.Sprint("n", i)
		start := time.Now()
		login(t, s.Edges[0].URL, name)
		select {
		case got := <-took:
			if got != name {
				t.Fatalf("the doomed registry took %q, the login was %q", got, name)
			}
			t.Logf("login %q survived its registry's death: %v (the attempt timeout is a quarter of the registry timeout)", name, time.Since(start))
			return
		default:
		}
		if i > 50 {
			t.Fatal("the doomed registry never got a login")
		}
	}
}
