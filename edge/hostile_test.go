package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

// TestHostileClients throws what a hostile client can at one edge, then
// checks that a bystander call on the same edge still works.
func TestHostileClients(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{HandshakeTimeout: 500 * time.Millisecond}})
	e := s.Edges[0]
	url := e.URL
	hostport := strings.TrimSuffix(strings.TrimPrefix(url, "ws://"), "/")
	closedWith := func(t *testing.T, c *client.Client, want ws.StatusCode) {
		t.Helper()
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatal("not closed")
		}
		if code, _ := c.CloseStatus(); code != want {
			t.Fatalf("closed with %d, want %d", code, want)
		}
	}
	errorFrame := func(t *testing.T, c *client.Client, frame, want string) {
		t.Helper()
		send(t, c, frame)
		if m := recv(t, c); m.Type != "error" || !strings.Contains(m.Message, want) {
			t.Fatalf("got %.200s, want an error with %q", m.Raw, want)
		}
	}

	t.Run("oversized frame", func(t *testing.T) {
		c := dial(t, url)
		_ = c.WriteFrame(ws.OpText, true, make([]byte, 1<<20))
		closedWith(t, c, ws.StatusMessageTooBig)
	})
	t.Run("oversized declared length, never sent", func(t *testing.T) {
		nc := rawDial(t, nil, hostport)
		// A header announcing 2^62 bytes: refused from the header alone.
		hdr := []byte{0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
		_, _ = nc.Write(hdr)
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		h, err := ws.ReadHeader(nc)
		if err != nil || h.OpCode != ws.OpClose {
			t.Fatalf("got %+v, %v; want a close frame", h, err)
		}
	})
	t.Run("ping flood without reading", func(t *testing.T) {
		before, errorsBefore := e.Stats().Connections, e.Stats().Errors
		nc := rawDial(t, nil, hostport)
		ping, _ := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewPingFrame(make([]byte, 125))))
		var burst []byte
		for range 100 {
			burst = append(burst, ping...)
		}
		_ = nc.SetWriteDeadline(time.Now().Add(3 * time.Second))
		for range 500 { // 50,000 pings, 6 MB of pongs if all were answered
			if _, err := nc.Write(burst); err != nil {
				break // cut off: what should happen
			}
		}
		// The edge throttles it (rate limit), closes it for abuse or for
		// not reading, and holds nothing for it once it is gone. (A flood
		// cut off in the middle of a frame leaves the edge waiting for the
		// rest until the dead-socket check, 30s by default: close it.)
		waitFor(t, "the ping flood limited", func() bool { return e.Stats().Errors > errorsBefore })
		_ = nc.Close()
		waitFor(t, fmt.Sprintf("back to the %d connections open before the ping flood", before), func() bool { return e.Stats().Connections <= before })
	})
	t.Run("binary frame", func(t *testing.T) {
		c := dial(t, url)
		_ = c.WriteFrame(ws.OpBinary, true, []byte{0, 1, 2})
		if m := recv(t, c); m.Type != "error" {
			t.Fatalf("got %s", m.Raw)
		}
	})
	t.Run("invalid UTF-8", func(t *testing.T) {
		c := dial(t, url)
		_ = c.WriteFrame(ws.OpText, true, []byte{'"', 0xc3, 0x28, '"'})
		closedWith(t, c, ws.StatusInvalidFramePayloadData)
	})
	t.Run("JSON that is not an object", func(t *testing.T) {
		c := dial(t, url)
		for _, f := range []string{`[]`, `"login"`, `42`, `null`, `true`} {
			errorFrame(t, c, f, "not a JSON object")
		}
	})
	t.Run("deeply nested JSON", func(t *testing.T) {
		c := dial(t, url)
		deep := `{"type":"offer","name":"x","offer":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`
		errorFrame(t, c, deep, "Invalid JSON")
		deepObj := strings.Repeat(`{"a":`, 10500) + "1" + strings.Repeat("}", 10500)
		errorFrame(t, c, deepObj, "Invalid JSON")
	})
	t.Run("1 MB name", func(t *testing.T) {
		c := dial(t, url)
		_ = c.SendRaw([]byte(`{"type":"login","name":"` + strings.Repeat("n", 1<<20) + `"}`))
		closedWith(t, c, ws.StatusMessageTooBig)
		c = dial(t, url)
		send(t, c, `{"type":"login","name":"`+strings.Repeat("n", 60<<10)+`"}`)
		if m := recv(t, c); m.Success || !strings.Contains(m.Message, "invalid name") {
			t.Fatalf("got %.100s", m.Raw)
		}
	})
	t.Run("names that look like subjects", func(t *testing.T) {
		victim := login(t, url, "victim")
		for _, n := range []string{">", "*", "user.>", "user.victim", "victim.>", "_INBOX.>"} {
			c := dial(t, url)
			send(t, c, fmt.Sprintf(`{"type":"login","name":%q}`, n))
			expectLoginOK(t, c)
		}
		other := login(t, url, "other")
		send(t, other, `{"type":"offer","name":"victim","offer":"for victim only"}`)
		expect(t, victim, `{"type":"offer","offer":"for victim only","name":"other"}`)
	})
	t.Run("garbage before the handshake", func(t *testing.T) {
		nc, err := net.Dial("tcp", hostport)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_, _ = nc.Write([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o', '\r', '\n', '\r', '\n'})
		_ = nc.SetReadDeadline(time.Now().Add(wait))
		line, _ := bufio.NewReader(nc).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 400") {
			t.Fatalf("got %q, want a 400", line)
		}
	})
	t.Run("frames right behind the handshake", func(t *testing.T) {
		nc, err := net.Dial("tcp", hostport)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		var b strings.Builder
		fmt.Fprintf(&b, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", hostport)
		frame, _ := ws.CompileFrame(ws.MaskFrameInPlace(ws.NewTextFrame([]byte(`{"type":"login","name":"eager"}`))))
		_, _ = nc.Write(append([]byte(b.String()), frame...))
		_ = nc.SetReadDeadline(time.Now().Add(wait))
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
		f, err := ws.ReadFrame(br)
		if err != nil || !strings.HasPrefix(string(f.Payload), `{"type":"login","success":true`) {
			t.Fatalf("got %q, %v", f.Payload, err)
		}
	})
	t.Run("slowloris upgrade", func(t *testing.T) {
		var slow []net.Conn
		for range 20 {
			nc, err := net.Dial("tcp", hostport)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
			slow = append(slow, nc)
		}
		// Meanwhile real clients get through.
		a, b := login(t, url, "patient-a"), login(t, url, "patient-b")
		send(t, a, `{"type":"offer","name":"patient-b","offer":1}`)
		expect(t, b, `{"type":"offer","offer":1,"name":"patient-a"}`)
		// And the slow ones are cut off after the handshake timeout.
		for _, nc := range slow {
			_ = nc.SetReadDeadline(time.Now().Add(wait))
			start := time.Now()
			if _, err := nc.Read(make([]byte, 512)); err == nil {
				// A 408 or 400 response is fine too; then EOF.
				_, err = nc.Read(make([]byte, 512))
				if err == nil {
					t.Fatal("slow client still served")
				}
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("slow client held past the handshake timeout")
			}
		}
	})
	// After all that the edge still serves.
	a, b := login(t, url, "after-a"), login(t, url, "after-b")
	send(t, a, `{"type":"offer","name":"after-b","offer":"ok"}`)
	expect(t, b, `{"type":"offer","offer":"ok","name":"after-a"}`)
}

// TestFloodLatency measures the relay round trip of calm calls with and
// without clients flooding the same edge at full speed (with the default
// limits), and checks that the calls go on. The figures are logged; the only
// bound is a loose one that catches starvation.
func TestFloodLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measures latency for a few seconds")
	}
	s := stack.Start(t, stack.Options{Edges: 2})
	calm := func() []time.Duration {
		const pairs, rounds = 10, 100
		var mu sync.Mutex
		var rtts []time.Duration
		var wg sync.WaitGroup
		id := time.Now().UnixNano()
		for p := range pairs {
			caller := login(t, s.Edges[0].URL, fmt.Sprintf("calm-%d-%d-a", id, p))
			callee := login(t, s.Edges[1].URL, fmt.Sprintf("calm-%d-%d-b", id, p))
			wg.Add(2)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				for range rounds {
					m, err := callee.Recv(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					_ = callee.Answer(m.Name, "a")
				}
			}()
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				for range rounds {
					start := time.Now()
					_ = caller.Offer(fmt.Sprintf("calm-%d-%d-b", id, p), "o")
					if _, err := caller.Recv(ctx); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					rtts = append(rtts, time.Since(start))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		slices.Sort(rtts)
		return rtts
	}
	pct := func(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }

	quiet := calm()

	stop := make(chan struct{})
	var floods, closed atomic.Int64
	var flooding [4]atomic.Bool // each flooder has had a frame taken
	limitedBefore := s.Edges[0].Stats().Errors
	var fwg sync.WaitGroup
	stopFlood := sync.OnceFunc(func() { close(stop); fwg.Wait() })
	defer stopFlood() // if the test fails while they flood
	for f := range 4 {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				c, err := client.Dial(ctx, s.Edges[0].URL, nil)
				if err == nil {
					_, err = c.Login(ctx, fmt.Sprintf("flood-%d-%d", f, n))
				}
				cancel()
				if err != nil {
					if c != nil {
						_ = c.Abort()
					}
					continue
				}
				msg := []byte(fmt.Sprintf(`{"type":"candidate","name":"flood-%d-0","candidate":"%s"}`, (f+1)%4, strings.Repeat("x", 200)))
				for c.SendRaw(msg) == nil {
					floods.Add(1)
					flooding[f].Store(true)
					select {
					case <-stop:
						_ = c.Abort()
						return
					default:
					}
				}
				select {
				case <-c.Done():
				case <-stop:
				}
				if code, _ := c.CloseStatus(); code == ws.StatusPolicyViolation {
					closed.Add(1)
				}
				_ = c.Abort()
			}
		}()
	}
	// The flood is on: every flooder sends, and the edge is limiting them.
	waitFor(t, "every flooder flooding the edge", func() bool {
		for f := range flooding {
			if !flooding[f].Load() {
				return false
			}
		}
		return s.Edges[0].Stats().Errors > limitedBefore
	})
	flooded := calm()
	stopFlood()

	t.Logf("calm calls, round trip p50/p99/max: without flood %v/%v/%v; with 4 flooders (%d frames sent, %d connections closed for abuse) %v/%v/%v",
		pct(quiet, 0.5), pct(quiet, 0.99), quiet[len(quiet)-1],
		floods.Load(), closed.Load(),
		pct(flooded, 0.5), pct(flooded, 0.99), flooded[len(flooded)-1])
	if closed.Load() == 0 {
		t.Error("no flooder was closed for abuse")
	}
	if p := pct(flooded, 0.99); p > time.Second {
		t.Errorf("calm calls starved: p99 %v under flood", p)
	}
}
