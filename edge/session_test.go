package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
)

// hostport returns host:port of a ws:// URL.
func hostport(url string) string {
	return strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/")
}

// rawRecv reads one frame from a raw connection.
func rawRecv(t testing.TB, nc net.Conn) ws.Frame {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	f, err := ws.ReadFrame(nc)
	if err != nil {
		t.Fatalf("raw read: %v", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	return f
}

// rawLogin logs in on a raw connection that answers nothing (not even
// pings) after its login reply.
func rawLogin(t testing.TB, url, name string) net.Conn {
	t.Helper()
	raw := rawDial(t, nil, hostport(url))
	rawSend(t, raw, `{"type":"login","name":"`+name+`"}`)
	if f := rawRecv(t, raw); !strings.HasPrefix(string(f.Payload), `{"type":"login","success":true`) {
		t.Fatalf("raw login: %s", f.Payload)
	}
	return raw
}

// loginResumable logs in asking for a resumable session and returns the
// client and its resume token.
func loginResumable(t testing.TB, url, name string) (*client.Client, string) {
	t.Helper()
	c := dial(t, url)
	send(t, c, `{"type":"login","name":"`+name+`","resumable":true}`)
	m := recv(t, c)
	if !m.Success {
		t.Fatalf("resumable login %q: %s", name, m.Raw)
	}
	return c, resumeToken(t, m)
}

// loginResume logs in on c with a resume token and returns the reply.
func loginResume(t testing.TB, c *client.Client, name, token string) client.Message {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"type": "login", "name": name, "resume": token})
	send(t, c, string(b))
	return recv(t, c)
}

func resumeToken(t testing.TB, m client.Message) string {
	t.Helper()
	var v struct {
		Resume string `json:"resume"`
	}
	if err := json.Unmarshal(m.Raw, &v); err != nil || len(v.Resume) < 32 {
		t.Fatalf("no resume token in %s", m.Raw)
	}
	return v.Resume
}

// released subscribes the registry's presence.offline events of name and
// returns a function that waits for the next one.
func released(t testing.TB, s *stack.Stack, name string) func() {
	t.Helper()
	sub, err := s.Conn("watcher").SubscribeSync(subject.PresenceOffline(names.Token(name)))
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := sub.NextMsg(wait); err != nil {
			t.Fatalf("%q was not released: %v", name, err)
		}
	}
}

// call sets up a call between caller and callee (offer, answer).
func call(t testing.TB, caller, callee *client.Client, callerName, calleeName string) {
	t.Helper()
	send(t, caller, `{"type":"offer","name":"`+calleeName+`","offer":"o"}`)
	expect(t, callee, `{"type":"offer","offer":"o","name":"`+callerName+`"}`)
	send(t, callee, `{"type":"answer","name":"`+callerName+`","answer":"a"}`)
	expect(t, caller, `{"type":"answer","answer":"a"}`)
}

// ending is one way a client's connection can end.
type ending struct {
	name string
	// resumable: whether a resumable session is held after it (no close
	// frame either way).
	held bool
	// end ends the connection; c is the client, raw a raw connection
	// logged in as the same user when the way needs one (nil otherwise).
	end func(t *testing.T, c *client.Client, raw net.Conn)
	raw bool
}

var endings = []ending{
	{name: "close frame", end: func(t *testing.T, c *client.Client, _ net.Conn) { _ = c.Close() }},
	{name: "FIN", held: true, end: func(t *testing.T, c *client.Client, _ net.Conn) { _ = c.Abort() }},
	{name: "reset", held: true, end: func(t *testing.T, c *client.Client, _ net.Conn) {
		_ = c.Conn().(*net.TCPConn).SetLinger(0)
		_ = c.Abort()
	}},
	{name: "dead socket", held: true, raw: true, end: func(t *testing.T, _ *client.Client, raw net.Conn) {}},
	{name: "frame timeout", held: true, raw: true, end: func(t *testing.T, _ *client.Client, raw net.Conn) {
		// The first bytes of a masked text frame of 100 bytes, then nothing.
		if _, err := raw.Write([]byte{0x81, 0x80 | 100, 1, 2, 3, 4, 'x'}); err != nil {
			t.Fatal(err)
		}
	}},
}

// endingStack is a stack whose silent clients are found quickly.
func endingStack(t *testing.T, grace time.Duration) *stack.Stack {
	return stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{
		PingAfter: 300 * time.Millisecond, PongTimeout: 300 * time.Millisecond, ResumeGrace: grace,
	}})
}

// TestPlainSessionEnds: a session that did not ask to be resumable is
// released the moment its connection ends, however it ends, and its peer on
// the other edge gets leave at once: the tutorial's behaviour.
func TestPlainSessionEnds(t *testing.T) {
	s := endingStack(t, time.Minute)
	peer := login(t, s.Edges[1].URL, "peer")
	for i, way := range endings {
		t.Run(way.name, func(t *testing.T) {
			name := fmt.Sprint("plain-", i)
			free := released(t, s, name)
			var c *client.Client
			var raw net.Conn
			if way.raw {
				raw = rawLogin(t, s.Edges[0].URL, name)
				rawSend(t, raw, `{"type":"offer","name":"peer","offer":"o"}`)
				expect(t, peer, `{"type":"offer","offer":"o","name":"`+name+`"}`)
			} else {
				c = login(t, s.Edges[0].URL, name)
				call(t, c, peer, name, "peer")
			}
			start := time.Now()
			way.end(t, c, raw)
			expect(t, peer, `{"type":"leave"}`)
			leave := time.Since(start)
			free()
			t.Logf("%s: peer's leave after %v, name free after %v", way.name, leave.Round(time.Microsecond), time.Since(start).Round(time.Microsecond))
			login(t, s.Edges[1].URL, name)
		})
	}
}

// TestResumableSessionEnds: a resumable session is released at once after
// a close frame, and held after every other end: its peer hears nothing,
// frames for it are kept, and its client resumes it on the other edge with
// its token, getting the kept frames first.
func TestResumableSessionEnds(t *testing.T) {
	s := endingStack(t, time.Minute)
	peer := login(t, s.Edges[1].URL, "peer")
	for i, way := range endings {
		t.Run(way.name, func(t *testing.T) {
			name := fmt.Sprint("res-", i)
			c, tok := loginResumable(t, s.Edges[0].URL, name)
			call(t, c, peer, name, "peer")
			// A client talks after it reads: its TCP acknowledgements are
			// current when the connection ends (a frame a client has read
			// but not yet acknowledged, when the connection is reset, is
			// delivered again after the resume).
			send(t, c, `{"type":"candidate","name":"peer","candidate":0}`)
			expect(t, peer, `{"type":"candidate","candidate":0}`)
			var raw net.Conn
			if way.raw {
				// The raw connection takes the session over (a resume on
				// the same edge), and then ends the way this case says.
				raw = rawDial(t, nil, hostport(s.Edges[0].URL))
				rawSend(t, raw, `{"type":"login","name":"`+name+`","resume":"`+tok+`"}`)
				var rep struct {
					Success bool   `json:"success"`
					Resume  string `json:"resume"`
				}
				_ = json.Unmarshal(rawRecv(t, raw).Payload, &rep)
				if !rep.Success || rep.Resume == "" {
					t.Fatal("raw resume failed")
				}
				tok = rep.Resume
				<-c.Done() // the old connection is closed (4002)
			}
			way.end(t, c, raw)
			if !way.held {
				expect(t, peer, `{"type":"leave"}`)
				login(t, s.Edges[1].URL, name)
				return
			}
			// Held: the peer's frames are kept, the name stays taken.
			if way.raw {
				// Wait until the edge has found the silent socket.
				waitStat(t, s.Edges[0].Edge, func(st edge.Stats) bool { return st.Held == 1 })
			}
			send(t, peer, `{"type":"candidate","name":"`+name+`","candidate":1}`)
			send(t, peer, `{"type":"candidate","name":"`+name+`","candidate":2}`)
			other := dial(t, s.Edges[1].URL)
			send(t, other, `{"type":"login","name":"`+name+`"}`)
			expectLoginRefused(t, other, "name is taken")
			c2 := dial(t, s.Edges[1].URL)
			if m := loginResume(t, c2, name, tok); !m.Success || !strings.Contains(string(m.Raw), `"resumed":true`) {
				t.Fatalf("resume: %s", m.Raw)
			}
			for _, n := range []string{"1", "2"} {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				m, err := c2.Recv(ctx)
				cancel()
				if err != nil || string(m.Raw) != `{"type":"candidate","candidate":`+n+`}` {
					t.Fatalf("after the resume: got %s %v, want candidate %s; edges %+v %+v", m.Raw, err, n, s.Edges[0].Stats(), s.Edges[1].Stats())
				}
			}
			send(t, peer, `{"type":"candidate","name":"`+name+`","candidate":3}`)
			expect(t, c2, `{"type":"candidate","candidate":3}`)
			expectNothing(t, peer, 50*time.Millisecond) // no leave, no error
			_ = c2.Close()
			expect(t, peer, `{"type":"leave"}`)
		})
	}
}

// waitStat polls an edge's counters until cond holds.
func waitStat(t testing.TB, e *edge.Edge, cond func(edge.Stats) bool) {
	t.Helper()
	deadline := time.After(wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond(e.Stats()) {
		select {
		case <-deadline:
			t.Fatalf("edge counters never got there: %+v", e.Stats())
		case <-tick.C:
		}
	}
}

// TestResumeLosesNothing: three senders send 100 frames each to a user who
// drops and resumes on the other edge while they send: every frame arrives
// exactly once, in order per sender.
func TestResumeLosesNothing(t *testing.T) {
	// The bounds of a held session are TestResumeBounds' business: here
	// they hold everything, however slow the machine makes the resume.
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{Rate: -1, MaxCandidates: 1 << 20, ResumeFrames: 1000}})
	recvr, tok := loginResumable(t, s.Edges[0].URL, "receiver")
	const senders, frames = 3, 100
	var wg sync.WaitGroup
	for i := range senders {
		sc := login(t, s.Edges[i%2].URL, fmt.Sprint("sender-", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Paced, so that the drop and the resume happen while they send.
			pace := time.NewTicker(time.Millisecond)
			defer pace.Stop()
			for n := range frames {
				if err := sc.SendRaw([]byte(fmt.Sprintf(`{"type":"candidate","name":"receiver","candidate":{"s":%d,"n":%d}}`, i, n))); err != nil {
					t.Error(err)
					return
				}
				if n%10 == 9 {
					<-pace.C
				}
			}
		}()
	}
	got := make([][]int, senders)
	read := func(c *client.Client, until func() bool) {
		for !until() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			m, err := c.Recv(ctx)
			cancel()
			if err != nil {
				t.Fatalf("recv: %v; got %d %d %d frames: %v\nedge 0 %+v\nedge 1 %+v", err, len(got[0]), len(got[1]), len(got[2]), got, s.Edges[0].Stats(), s.Edges[1].Stats())
			}
			if m.Type == "error" {
				t.Fatalf("receiver got %s", m.Raw)
			}
			var v struct{ S, N int }
			if err := json.Unmarshal(m.Candidate, &v); err != nil {
				t.Fatalf("frame %s", m.Raw)
			}
			got[v.S] = append(got[v.S], v.N)
		}
	}
	total := func() int { return len(got[0]) + len(got[1]) + len(got[2]) }
	read(recvr, func() bool { return total() >= 30 })
	_ = recvr.Abort()
	// What the client had read off its socket before the drop counts.
	for {
		m, err := recvr.Recv(context.Background())
		if err != nil {
			break
		}
		var v struct{ S, N int }
		if json.Unmarshal(m.Candidate, &v) == nil {
			got[v.S] = append(got[v.S], v.N)
		}
	}
	c2 := dial(t, s.Edges[1].URL)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if m, err := c2.ResumeFrom(ctx, "receiver", tok, recvr.Received()); err != nil || !m.Resumed {
		t.Fatalf("resume: %s %v", m.Raw, err)
	}
	read(c2, func() bool { return total() >= senders*frames })
	wg.Wait()
	expectNothing(t, c2, 200*time.Millisecond) // nothing twice
	for i, ns := range got {
		for n, v := range ns {
			if v != n {
				t.Fatalf("sender %d: frame %d is %d (got %v)", i, n, v, ns)
			}
		}
		if len(ns) != frames {
			t.Fatalf("sender %d: %d frames", i, len(ns))
		}
	}
	t.Logf("all %d frames once and in order; kept on edge 0: %d, reached both edges and delivered once: %d",
		senders*frames, s.Edges[0].Stats().Kept, s.Edges[1].Stats().Deduplicated)
}

// TestResumeBounds: frames beyond a held session's bounds are refused (the
// sender hears "not online"), and counted; when the grace ends unresumed,
// what was kept is refused too and the peer gets leave.
func TestResumeBounds(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{ResumeGrace: 700 * time.Millisecond, ResumeFrames: 3}})
	c, _ := loginResumable(t, s.Edges[0].URL, "held")
	peer := login(t, s.Edges[1].URL, "peer")
	call(t, c, peer, "held", "peer")
	_ = c.Abort()
	waitStat(t, s.Edges[0].Edge, func(st edge.Stats) bool { return st.Held == 1 })
	for n := range 5 {
		send(t, peer, fmt.Sprintf(`{"type":"candidate","name":"held","candidate":%d}`, n))
	}
	// Two over the bound: refused at once.
	for range 2 {
		if m := recv(t, peer); m.Message != `user "held" is not online` {
			t.Fatalf("frame over the bound: got %s", m.Raw)
		}
	}
	// The grace ends: the three kept are refused, and the call is over.
	errs, leaves := 0, 0
	for errs < 3 || leaves < 1 {
		m := recv(t, peer)
		switch {
		case m.Type == "leave":
			leaves++
		case m.Message == `user "held" is not online`:
			errs++
		default:
			t.Fatalf("got %s", m.Raw)
		}
	}
	st := s.Edges[0].Stats()
	if st.Dropped < 5 {
		t.Fatalf("dropped %d, want at least 5", st.Dropped)
	}
	login(t, s.Edges[1].URL, "held")
}

// TestStaleConnection: a resume while the old connection is still open
// (the server has not noticed the drop yet) closes it with 4002, on the
// same edge or another; the stale socket speaks for nobody afterwards; the
// peer hears nothing.
func TestStaleConnection(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	peer := login(t, s.Edges[0].URL, "peer")
	for i, to := range []int{1, 0} {
		t.Run(fmt.Sprint("to edge ", to), func(t *testing.T) {
			name := fmt.Sprint("stale-", i)
			raw := rawDial(t, nil, hostport(s.Edges[0].URL))
			rawSend(t, raw, `{"type":"login","name":"`+name+`","resumable":true}`)
			var rep struct {
				Resume string `json:"resume"`
			}
			_ = json.Unmarshal(rawRecv(t, raw).Payload, &rep)
			rawSend(t, raw, `{"type":"offer","name":"peer","offer":1}`)
			expect(t, peer, `{"type":"offer","offer":1,"name":"`+name+`"}`)
			c2 := dial(t, s.Edges[to].URL)
			if m := loginResume(t, c2, name, rep.Resume); !m.Success {
				t.Fatalf("resume: %s", m.Raw)
			}
			if f := rawRecv(t, raw); f.Header.OpCode != ws.OpClose {
				t.Fatalf("stale connection got %s", f.Payload)
			} else if code, _ := ws.ParseCloseFrameData(f.Payload); code != 4002 {
				t.Fatalf("stale connection closed with %d, want 4002", code)
			}
			// It keeps talking: nobody hears it.
			rawSend(t, raw, `{"type":"offer","name":"peer","offer":"from the stale socket"}`)
			expectNothing(t, peer, 200*time.Millisecond)
			send(t, peer, `{"type":"candidate","name":"`+name+`","candidate":4}`)
			expect(t, c2, `{"type":"candidate","candidate":4}`)
			_ = c2.Close()
			expect(t, peer, `{"type":"leave"}`)
		})
	}
}

// TestResumeTokens: a wrong token, another name's token, or no token does
// not take a held session; a spent token resumes nothing; after the grace
// the old token logs in fresh.
func TestResumeTokens(t *testing.T) {
	const grace = 700 * time.Millisecond
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{ResumeGrace: grace}})
	c, tok := loginResumable(t, s.Edges[0].URL, "mobile")
	_, otherTok := loginResumable(t, s.Edges[0].URL, "other")
	peer := login(t, s.Edges[1].URL, "peer")
	call(t, c, peer, "mobile", "peer")
	_ = c.Abort()
	c2 := dial(t, s.Edges[1].URL)
	for _, bad := range []string{"wrong", tok[:len(tok)-1] + "x", otherTok} {
		if m := loginResume(t, c2, "mobile", bad); m.Success || m.Message != "resume token does not match" {
			t.Fatalf("token %.8q: %s", bad, m.Raw)
		}
	}
	send(t, c2, `{"type":"login","name":"mobile"}`)
	expectLoginRefused(t, c2, "name is taken")
	// The grace ends: the peer hears, and the old token is a fresh login.
	start := time.Now()
	expect(t, peer, `{"type":"leave"}`)
	t.Logf("held session released and peer told %v after the wrong tokens (grace %v)", time.Since(start), grace)
	m := loginResume(t, c2, "mobile", tok)
	if !m.Success || strings.Contains(string(m.Raw), `"resumed"`) {
		t.Fatalf("login after the grace: %s", m.Raw)
	}
	if resumeToken(t, m) == tok {
		t.Fatal("the token was not rotated")
	}
}

// TestLoginReplies: every login gets a login reply, whatever stops it; the
// login attempts limit closes with 1008 naming the limit.
func TestLoginReplies(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{MaxLogins: 3}})
	login(t, s.Edges[0].URL, "taken")
	c := dial(t, s.Edges[0].URL)
	for range 3 {
		send(t, c, `{"type":"login","name":"taken"}`)
		expectLoginRefused(t, c, "name is taken")
	}
	send(t, c, `{"type":"login","name":"free"}`)
	expectLoginRefused(t, c, "too many login attempts (limit 3")
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("not closed after the login limit")
	}
	if code, reason := c.CloseStatus(); code != ws.StatusPolicyViolation || !strings.Contains(reason, "login attempts limit (3)") {
		t.Fatalf("closed with %d %q", code, reason)
	}
}

// TestTutorialClientSeesOnlyTutorialFrames: a client that sends only the
// tutorial's messages receives only their replies, however busy the others
// are with rooms, presence and app messages around it.
func TestTutorialClientSeesOnlyTutorialFrames(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	tut := login(t, s.Edges[0].URL, "tut")
	busy := login(t, s.Edges[1].URL, "busy")
	send(t, busy, `{"type":"watch","names":["tut"]}`)
	if m := recv(t, busy); m.Type != "presence" {
		t.Fatalf("watcher got %s", m.Raw)
	}
	send(t, busy, `{"type":"join","room":"lobby"}`)
	if m := recv(t, busy); m.Type != "join" || !m.Success {
		t.Fatalf("join: %s", m.Raw)
	}
	send(t, busy, `{"type":"message","room":"lobby","data":"hi"}`)
	call(t, busy, tut, "busy", "tut")
	send(t, busy, `{"type":"leave","name":"tut"}`)
	expect(t, tut, `{"type":"leave"}`)
	expectNothing(t, tut, 200*time.Millisecond)
}

// observe counts the NATS messages on subj for the duration of the test.
func observe(t testing.TB, nc *nats.Conn, subj string) func() int {
	var mu sync.Mutex
	n := 0
	sub, err := nc.Subscribe(subj, func(*nats.Msg) { mu.Lock(); n++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() int { mu.Lock(); defer mu.Unlock(); return n }
}

var _ = context.Background
