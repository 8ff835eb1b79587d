package edge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

const wait = 10 * time.Second

// TestMain fails the package if a test leaves a goroutine behind: every
// goroutine an edge starts ends with its Shutdown.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dial(t testing.TB, url string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	return c
}

func login(t testing.TB, url, name string) *client.Client {
	t.Helper()
	c := dial(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := c.Login(ctx, name)
	if err != nil {
		t.Fatalf("login %q: %v (%s)", name, err, m.Raw)
	}
	return c
}

func recv(t testing.TB, c *client.Client) client.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return m
}

// expect receives one frame and checks it byte for byte.
func expect(t testing.TB, c *client.Client, want string) {
	t.Helper()
	if got := recv(t, c); string(got.Raw) != want {
		t.Fatalf("got  %s\nwant %s", got.Raw, want)
	}
}

// expectLoginOK receives a successful login reply.
func expectLoginOK(t testing.TB, c *client.Client) {
	t.Helper()
	if m := recv(t, c); m.Type != "login" || !m.Success || !strings.HasPrefix(string(m.Raw), `{"type":"login","success":true`) {
		t.Fatalf("got %s, want a successful login", m.Raw)
	}
}

// expectLoginRefused receives a login reply with success false whose
// message starts with msg.
func expectLoginRefused(t testing.TB, c *client.Client, msg string) {
	t.Helper()
	if m := recv(t, c); m.Type != "login" || m.Success || !strings.HasPrefix(m.Message, msg) {
		t.Fatalf("got %s, want a refused login %q", m.Raw, msg)
	}
}

// expectNothing checks that no frame arrives within d.
func expectNothing(t testing.TB, c *client.Client, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := c.Recv(ctx); err == nil {
		t.Fatalf("unexpected frame %s", m.Raw)
	}
}

func send(t testing.TB, c *client.Client, frame string) {
	t.Helper()
	if err := c.SendRaw([]byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// TestProtocol runs the tutorial's whole exchange, with both users on one
// edge and on two edges.
func TestProtocol(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edges int
	}{
		{name: "one edge", edges: 1},
		{name: "two edges", edges: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := stack.Start(t, stack.Options{Edges: tt.edges})
			urlA, urlB := s.Edges[0].URL, s.Edges[len(s.Edges)-1].URL
			a := login(t, urlA, "alice")
			b := login(t, urlB, "李雷 🙂")

			// Payloads of any JSON kind pass byte for byte; the sender is
			// stamped by the edge.
			send(t, a, `{"type":"offer","name":"李雷 🙂","offer": { "type" : "offer", "sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" , "name":"mallory"} }`)
			expect(t, b, `{"type":"offer","offer":{ "type" : "offer", "sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" , "name":"mallory"},"name":"alice"}`)
			send(t, b, `{"type":"answer","name":"alice","answer":"just a string"}`)
			expect(t, a, `{"type":"answer","answer":"just a string"}`)
			send(t, a, `{"type":"candidate","name":"李雷 🙂","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}`)
			expect(t, b, `{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}`)
			send(t, b, `{"type":"candidate","name":"alice","candidate":null}`)
			expect(t, a, `{"type":"candidate","candidate":null}`)
			send(t, b, `{"type":"candidate","name":"alice","candidate":[1,2.5e3,true]}`)
			expect(t, a, `{"type":"candidate","candidate":[1,2.5e3,true]}`)
			send(t, a, `{"type":"leave","name":"李雷 🙂"}`)
			expect(t, b, `{"type":"leave"}`)

			// A new call; when the callee's connection closes, the caller
			// gets leave and the callee's name is free again.
			send(t, a, `{"type":"offer","name":"李雷 🙂","offer":1}`)
			expect(t, b, `{"type":"offer","offer":1,"name":"alice"}`)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			expect(t, a, `{"type":"leave"}`)
			b2 := login(t, urlA, "李雷 🙂")

			// And the other way round: the caller goes, the callee (who
			// only received the offer) is told.
			send(t, b2, `{"type":"offer","name":"alice","offer":{}}`)
			expect(t, a, `{"type":"offer","offer":{},"name":"李雷 🙂"}`)
			_ = b2.Close()
			expect(t, a, `{"type":"leave"}`)
		})
	}
}

func TestLoginTaken(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	login(t, s.Edges[0].URL, "bob")
	for _, e := range s.Edges {
		c := dial(t, e.URL)
		send(t, c, `{"type":"login","name":"bob"}`)
		expectLoginRefused(t, c, "name is taken")
		// Still usable: another name works on the same connection.
		send(t, c, `{"type":"login","name":"bob-`+e.ID+`"}`)
		expectLoginOK(t, c)
	}
}

// TestLoginRace has two edges race for the same name, 50 times: exactly one
// wins each round.
func TestLoginRace(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	for round := range 50 {
		name := fmt.Sprintf("racer-%d", round)
		c1, c2 := dial(t, s.Edges[0].URL), dial(t, s.Edges[1].URL)
		var wg sync.WaitGroup
		results := make([]client.Message, 2)
		for i, c := range []*client.Client{c1, c2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SendRaw([]byte(`{"type":"login","name":"` + name + `"}`))
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				defer cancel()
				results[i], _ = c.Recv(ctx)
			}()
		}
		wg.Wait()
		wins := 0
		for _, m := range results {
			if m.Type != "login" {
				t.Fatalf("round %d: unexpected reply %s", round, m.Raw)
			}
			if m.Success {
				wins++
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners", round, wins)
		}
		_ = c1.Abort()
		_ = c2.Abort()
	}
}

// TestManyPairs runs 200 concurrent calls across two edges, each an offer,
// an answer and 5 candidates each way: nothing lost, nothing reordered,
// nothing delivered to the wrong user.
func TestManyPairs(t *testing.T) {
	const pairs, cands = 200, 5
	s := stack.Start(t, stack.Options{Edges: 2})
	type pair struct{ caller, callee *client.Client }
	ps := make([]pair, pairs)
	for i := range ps {
		ps[i] = pair{
			caller: login(t, s.Edges[0].URL, fmt.Sprintf("caller-%d", i)),
			callee: login(t, s.Edges[1].URL, fmt.Sprintf("callee-%d", i)),
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	for i, p := range ps {
		caller, callee := fmt.Sprintf("caller-%d", i), fmt.Sprintf("callee-%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- exchange(p.caller, callee, caller, "offer", "answer", cands)
		}()
		go func() {
			defer wg.Done()
			errs <- exchange(p.callee, caller, callee, "answer", "offer", cands)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// exchange plays one side of a call: for the caller, send the offer and 5
// candidates, then expect the answer and 5 candidates in order. The callee
// waits for the offer first.
func exchange(c *client.Client, peer, me, mine, theirs string, cands int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sendAll := func() error {
		sdp := fmt.Sprintf("%s from %s", mine, me)
		if err := c.Send(map[string]any{"type": mine, "name": peer, mine: sdp}); err != nil {
			return err
		}
		for i := range cands {
			if err := c.Candidate(peer, fmt.Sprintf("%s-%d", me, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if mine == "offer" {
		if err := sendAll(); err != nil {
			return err
		}
	}
	m, err := c.Recv(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", me, err)
	}
	var sdp string
	if mine == "offer" {
		_ = json.Unmarshal(m.Answer, &sdp)
	} else {
		_ = json.Unmarshal(m.Offer, &sdp)
	}
	if m.Type != theirs || sdp != theirs+" from "+peer || (theirs == "offer" && m.Name != peer) {
		return fmt.Errorf("%s: got %s, want %s from %s", me, m.Raw, theirs, peer)
	}
	if mine == "answer" {
		if err := sendAll(); err != nil {
			return err
		}
	}
	for i := range cands {
		m, err := c.Recv(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", me, err)
		}
		var got string
		_ = json.Unmarshal(m.Candidate, &got)
		if want := fmt.Sprintf("%s-%d", peer, i); m.Type != "candidate" || got != want {
			return fmt.Errorf("%s: candidate %d: got %s, want %s", me, i, m.Raw, want)
		}
	}
	return nil
}

func TestErrors(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	url := s.Edges[0].URL
	anon := dial(t, url)
	for _, tt := range []struct {
		name  string
		frame string
		want  string // prefix of the error message
	}{
		{name: "invalid JSON", frame: `{"type":`, want: "Invalid JSON"},
		{name: "not JSON", frame: `hello`, want: "Invalid JSON"},
		{name: "not an object", frame: `["login"]`, want: "Invalid message"},
		{name: "missing type", frame: `{"name":"x"}`, want: "Command not found"},
		{name: "type not a string", frame: `{"type":7}`, want: "Command not found"},
		{name: "unknown type", frame: `{"type":"dance"}`, want: "Command not found: dance"},
		{name: "offer before login", frame: `{"type":"offer","name":"x","offer":1}`, want: "not logged in"},
		{name: "candidate before login", frame: `{"type":"candidate","name":"x","candidate":1}`, want: "not logged in"},
		{name: "leave before login", frame: `{"type":"leave","name":"x"}`, want: "not logged in"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			send(t, anon, tt.frame)
			m := recv(t, anon)
			if m.Type != "error" || !strings.HasPrefix(m.Message, tt.want) {
				t.Fatalf("got %s, want an error %q", m.Raw, tt.want)
			}
		})
	}

	me := login(t, url, "me")
	login(t, url, "you")
	for _, tt := range []struct {
		name  string
		frame string
		want  string
	}{
		{name: "missing target", frame: `{"type":"offer","offer":1}`, want: `missing "name"`},
		{name: "target not a string", frame: `{"type":"offer","name":5,"offer":1}`, want: `missing "name"`},
		{name: "empty target", frame: `{"type":"offer","name":"","offer":1}`, want: "invalid name"},
		{name: "control character in target", frame: `{"type":"offer","name":"a\u0000b","offer":1}`, want: "invalid name"},
		{name: "target too long", frame: `{"type":"offer","name":"` + strings.Repeat("x", 10000) + `","offer":1}`, want: "invalid name"},
		{name: "missing offer", frame: `{"type":"offer","name":"you"}`, want: `missing "offer"`},
		{name: "missing answer", frame: `{"type":"answer","name":"you"}`, want: `missing "answer"`},
		{name: "missing candidate", frame: `{"type":"candidate","name":"you"}`, want: `missing "candidate"`},
		{name: "target not online", frame: `{"type":"offer","name":"nobody","offer":1}`, want: `user "nobody" is not online`},
		{name: "unicode target not online", frame: `{"type":"candidate","name":"ghost 👻","candidate":1}`, want: `user "ghost 👻" is not online`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			send(t, me, tt.frame)
			m := recv(t, me)
			if m.Type != "error" || !strings.HasPrefix(m.Message, tt.want) {
				t.Fatalf("got %s, want an error %q", m.Raw, tt.want)
			}
		})
	}
	// A second login gets a login reply, as every login does.
	send(t, me, `{"type":"login","name":"other"}`)
	expectLoginRefused(t, me, `already logged in as "me"`)
	// After all that, both connections still work.
	you := dial(t, url)
	send(t, you, `{"type":"login","name":"you2"}`)
	expectLoginOK(t, you)
	send(t, me, `{"type":"offer","name":"you2","offer":"still here"}`)
	expect(t, you, `{"type":"offer","offer":"still here","name":"me"}`)
	send(t, anon, `{"type":"login","name":"anon"}`)
	expectLoginOK(t, anon)
}

// TestHostileNames logs in users whose names look like subjects and
// wildcards. Each gets exactly its own messages; none sees another's.
func TestHostileNames(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	hostile := []string{"*", ">", "a.b", "user.>", "a b", "user.*", ".", "a..b", " ", "=", "=YWJj", "abc", "_INBOX.>", "$SYS.>", "\t"[1:] + "tab"}
	cs := make(map[string]*client.Client)
	for i, n := range hostile {
		cs[n] = login(t, s.Edges[i%2].URL, n)
	}
	sender := login(t, s.Edges[0].URL, "sender")
	for _, n := range hostile {
		b, _ := json.Marshal(map[string]any{"type": "offer", "name": n, "offer": n})
		send(t, sender, string(b))
	}
	for _, n := range hostile {
		m := recv(t, cs[n])
		var got string
		_ = json.Unmarshal(m.Offer, &got)
		if m.Type != "offer" || got != n || m.Name != "sender" {
			t.Errorf("%q got %s", n, m.Raw)
		}
	}
	for _, n := range hostile {
		expectNothing(t, cs[n], 100*time.Millisecond)
	}

	refused := []string{"", strings.Repeat("x", 10<<10), "nul\u0000", "line\nbreak", "\u2028"}
	c := dial(t, s.Edges[0].URL)
	for _, n := range refused {
		b, _ := json.Marshal(map[string]any{"type": "login", "name": n})
		send(t, c, string(b))
		m := recv(t, c)
		if m.Type != "login" || m.Success || !strings.HasPrefix(m.Message, "invalid name") {
			t.Errorf("login %.20q: got %.200s", n, m.Raw)
		}
	}
	send(t, c, `{"type":"login"}`)
	if m := recv(t, c); m.Type != "login" || m.Success {
		t.Errorf("login without name: got %s", m.Raw)
	}
	send(t, c, `{"type":"login","name":["x"]}`)
	if m := recv(t, c); m.Type != "login" || m.Success {
		t.Errorf("login with an array name: got %s", m.Raw)
	}
}

func TestFrames(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{MaxFrameSize: 1024}})
	url := s.Edges[0].URL

	t.Run("ping", func(t *testing.T) {
		c := dial(t, url)
		// The client answers pings itself; here the server answers ours:
		// a pong arrives, so the next login reply is in order after it.
		if err := c.WriteFrame(ws.OpPing, true, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		send(t, c, `{"type":"login","name":"pinger"}`)
		expectLoginOK(t, c)
	})
	t.Run("binary", func(t *testing.T) {
		c := dial(t, url)
		if err := c.WriteFrame(ws.OpBinary, true, []byte(`{"type":"login","name":"bin"}`)); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, c); m.Type != "error" {
			t.Fatalf("got %s", m.Raw)
		}
		send(t, c, `{"type":"login","name":"bin"}`)
		expectLoginOK(t, c)
	})
	t.Run("fragmented", func(t *testing.T) {
		c := dial(t, url)
		frame := `{"type":"login","name":"fragments"}`
		_ = c.WriteFrame(ws.OpText, false, []byte(frame[:10]))
		_ = c.WriteFrame(ws.OpPing, true, nil)
		_ = c.WriteFrame(ws.OpContinuation, false, []byte(frame[10:20]))
		_ = c.WriteFrame(ws.OpContinuation, true, []byte(frame[20:]))
		expectLoginOK(t, c)
	})
	t.Run("too big", func(t *testing.T) {
		c := login(t, url, "big")
		other := login(t, url, "bystander")
		send(t, c, `{"type":"offer","name":"bystander","offer":"`+strings.Repeat("x", 2000)+`"}`)
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatal("not closed")
		}
		if code, _ := c.CloseStatus(); code != ws.StatusMessageTooBig {
			t.Fatalf("close code %d, want 1009", code)
		}
		expectNothing(t, other, 100*time.Millisecond)
		// The name is free again.
		login(t, url, "big")
	})
	t.Run("too big in fragments", func(t *testing.T) {
		c := dial(t, url)
		for range 3 {
			_ = c.WriteFrame(ws.OpText, false, make([]byte, 400))
			_ = c.WriteFrame(ws.OpContinuation, false, make([]byte, 400))
		}
		waitClosed(t, c)
		if code, _ := c.CloseStatus(); code != ws.StatusMessageTooBig && code != ws.StatusProtocolError {
			t.Fatalf("close code %d", code)
		}
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		c := dial(t, url)
		_ = c.WriteFrame(ws.OpText, true, []byte("{\"type\":\"login\",\"name\":\"\xff\"}"))
		waitClosed(t, c)
		if code, _ := c.CloseStatus(); code != ws.StatusInvalidFramePayloadData {
			t.Fatalf("close code %d, want 1007", code)
		}
	})
	t.Run("close handshake", func(t *testing.T) {
		c := dial(t, url)
		_ = c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatal("no close reply")
		}
		if code, _ := c.CloseStatus(); code != ws.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
	})
}

// TestSlowClient: a client that never reads is disconnected when its queue
// fills; the other users keep working meanwhile.
func TestSlowClient(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{WriteQueue: 8, WriteTimeout: time.Second, ResumeGrace: -1}})
	url := s.Edges[0].URL
	raw := rawDial(t, s.Edges[0].Edge.Stats, strings.TrimPrefix(strings.TrimSuffix(url, "/"), "ws://"))
	gone := released(t, s, "sleeper")
	rawSend(t, raw, `{"type":"login","name":"sleeper"}`)
	// Logged in (it never reads the reply, nor anything else).
	waitStat(t, s.Edges[0].Edge, func(st edge.Stats) bool { return st.Users == 1 })

	flood := login(t, url, "flood")
	a, b := login(t, url, "a"), login(t, url, "b")
	payload := `"` + strings.Repeat("x", 60000) + `"`
	deadline := time.Now().Add(wait)
	for s.Edges[0].Stats().SlowClients == 0 && time.Now().Before(deadline) {
		_ = flood.SendRaw([]byte(`{"type":"candidate","name":"sleeper","candidate":` + payload + `}`))
		send(t, a, `{"type":"candidate","name":"b","candidate":1}`)
		expect(t, b, `{"type":"candidate","candidate":1}`)
	}
	if s.Edges[0].Stats().SlowClients == 0 {
		t.Fatal("the client that does not read was never disconnected")
	}
	// Its name is released, and then free at once.
	gone()
	login(t, url, "sleeper")
}

// TestLateReader: frames for a client that stops reading for a while pile
// up in the kernel and then in its queue (a frame the socket takes only in
// part has its rest queued first); once it reads again, every frame arrives
// whole and in order.
func TestLateReader(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{ResumeGrace: -1}})
	url := s.Edges[0].URL
	late := rawDial(t, s.Edges[0].Edge.Stats, strings.TrimPrefix(strings.TrimSuffix(url, "/"), "ws://"))
	_ = late.(*net.TCPConn).SetReadBuffer(256 << 10) // rawDial's is tiny
	_ = late.SetReadDeadline(time.Now().Add(2 * wait))
	br := bufio.NewReader(late)
	next := func() string {
		t.Helper()
		f, err := ws.ReadFrame(br)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if f.Header.OpCode != ws.OpText || !f.Header.Fin {
			t.Fatalf("frame %+v", f.Header)
		}
		return string(f.Payload)
	}
	rawSend(t, late, `{"type":"login","name":"late"}`)
	if m := next(); !strings.HasPrefix(m, `{"type":"login","success":true`) {
		t.Fatalf("login reply %.80s", m)
	}

	// Now it reads nothing while a sends it 800 KB: more than the socket
	// buffers hold, less than its queue may.
	a := login(t, url, "a")
	before := handedOff(t, s.Edges[0].Edge)
	const n, size = 40, 20000
	pad := strings.Repeat("x", size)
	for i := range n {
		send(t, a, fmt.Sprintf(`{"type":"candidate","name":"late","candidate":{"i":%d,"x":"%s"}}`, i, pad))
	}
	send(t, a, `{"type":"candidate","name":"late","candidate":"end"}`)
	// The edge has had every frame for late: written what the kernel
	// takes, queued the rest.
	waitFor(t, "every frame handed on to late", func() bool { return handedOff(t, s.Edges[0].Edge) >= before+n+1 })

	for i := range n {
		want := fmt.Sprintf(`{"type":"candidate","candidate":{"i":%d,"x":"%s"}}`, i, pad)
		if got := next(); got != want {
			t.Fatalf("frame %d: got %d bytes %.60s..., want %d bytes %.60s...", i, len(got), got, len(want), want)
		}
	}
	if got := next(); got != `{"type":"candidate","candidate":"end"}` {
		t.Fatalf("last frame %.80s", got)
	}
	expectNothing(t, a, 100*time.Millisecond) // no error came back to the sender
}

// rawDial opens a WebSocket connection by hand, reads the handshake
// response and then nothing more: a client that does not read.
func rawDial(t testing.TB, _ func() edge.Stats, hostport string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", hostport)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	_, err = fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", hostport)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	return nc
}

func rawSend(t testing.TB, nc net.Conn, frame string) {
	t.Helper()
	f := ws.MaskFrameInPlace(ws.NewTextFrame([]byte(frame)))
	if err := ws.WriteFrame(nc, f); err != nil {
		t.Fatal(err)
	}
}

// TestNotOnline: a message to a user who is not online comes back as an
// error frame, whether the target never logged in (while an operator
// watches "user.>"), or left in the middle of a call.
func TestNotOnline(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	obs, err := s.Conn("observer").SubscribeSync("user.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = obs
	a := login(t, s.Edges[0].URL, "a")
	send(t, a, `{"type":"offer","name":"nobody","offer":1}`)
	if m := recv(t, a); m.Message != `user "nobody" is not online` {
		t.Fatalf("got %s", m.Raw)
	}
	_ = obs.Unsubscribe()

	b := login(t, s.Edges[1].URL, "b")
	send(t, a, `{"type":"offer","name":"b","offer":1}`)
	expect(t, b, `{"type":"offer","offer":1,"name":"a"}`)
	_ = b.Close()
	expect(t, a, `{"type":"leave"}`)
	// The route to b is cached; NATS's no-responders status tells.
	send(t, a, `{"type":"candidate","name":"b","candidate":1}`)
	if m := recv(t, a); m.Message != `user "b" is not online` {
		t.Fatalf("got %s", m.Raw)
	}
}
