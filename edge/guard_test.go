package edge_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

func dialWith(url string, h http.Header) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return client.Dial(ctx, url, &client.Options{Header: h})
}

func statusOf(err error) int {
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se)
	}
	return 0
}

func TestOrigins(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	def := s.Edges[0]
	host := strings.TrimSuffix(strings.TrimPrefix(def.URL, "ws://"), "/")
	for _, tt := range []struct {
		name   string
		origin string
		ok     bool
	}{
		{name: "no origin", origin: "", ok: true},
		{name: "localhost", origin: "http://localhost:3000", ok: true},
		{name: "loopback", origin: "http://127.0.0.1:8080", ok: true},
		{name: "same host", origin: "http://" + host, ok: true},
		{name: "other site", origin: "https://evil.example", ok: false},
		{name: "garbage", origin: "::::", ok: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			c, err := dialWith(def.URL, h)
			if tt.ok != (err == nil) {
				t.Fatalf("dial with origin %q: %v", tt.origin, err)
			}
			if err == nil {
				_ = c.Abort()
			} else if statusOf(err) != http.StatusForbidden {
				t.Fatalf("refused with %v, want 403", err)
			}
		})
	}

	s2 := stack.Start(t, stack.Options{Edge: edge.Config{AllowedOrigins: []string{"https://app.example"}}})
	url := s2.Edges[0].URL
	if c, err := dialWith(url, http.Header{"Origin": {"https://app.example"}}); err != nil {
		t.Fatalf("listed origin: %v", err)
	} else {
		_ = c.Abort()
	}
	if _, err := dialWith(url, http.Header{"Origin": {"http://localhost:3000"}}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("unlisted origin: %v", err)
	}
}

type tokenAuth map[string]string // token -> name

func (a tokenAuth) Authenticate(r *http.Request) (string, error) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	if name, ok := a[tok]; ok {
		return name, nil
	}
	return "", errors.New("bad token")
}

func TestAuthHook(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{Auth: tokenAuth{"t-alice": "alice"}}})
	url := s.Edges[0].URL
	if _, err := dialWith(url, nil); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("no token: %v, want 401", err)
	}
	if _, err := dialWith(url, http.Header{"Authorization": {"Bearer wrong"}}); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v, want 401", err)
	}
	if got := s.Edges[0].Stats().Connections; got != 0 {
		t.Fatalf("refused upgrades hold %d connections", got)
	}
	c, err := dialWith(url+"?token=t-alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	send(t, c, `{"type":"login","name":"bob"}`)
	if m := recv(t, c); m.Success || !strings.Contains(m.Message, "token") {
		t.Fatalf("login as another name: %s", m.Raw)
	}
	send(t, c, `{"type":"login","name":"alice"}`)
	expectLoginOK(t, c)
}

func TestICEServers(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{ICEServers: func(dst []byte, name string) []byte {
		return append(dst, `[{"urls":["turn:127.0.0.1:3478"],"username":"1:`+name+`","credential":"x"}]`...)
	}}})
	c := dial(t, s.Edges[0].URL)
	send(t, c, `{"type":"login","name":"nat"}`)
	m := recv(t, c)
	if !m.Success || !strings.Contains(string(m.Raw), `"iceServers":[{"urls":["turn:127.0.0.1:3478"],"username":"1:nat","credential":"x"}]}`) {
		t.Fatalf("login reply: %s", m.Raw)
	}
}

func TestConnLimits(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{
		MaxConnsPerIP:  2,
		MaxConns:       3,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}})
	url := s.Edges[0].URL
	xff := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {"203.0.113.9, " + ip}} }
	var open []*client.Client
	for range 2 {
		c, err := dialWith(url, xff("198.51.100.1"))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if _, err := dialWith(url, xff("198.51.100.1")); statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("third from one address: %v, want 429", err)
	}
	c, err := dialWith(url, xff("198.51.100.2"))
	if err != nil {
		t.Fatalf("another address: %v", err)
	}
	open = append(open, c)
	if _, err := dialWith(url, xff("198.51.100.3")); statusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("over the edge's limit: %v, want 503", err)
	}
	// Closing gives the slots back: once the edge has forgotten the
	// connections, the address and the edge take new ones.
	for _, c := range open {
		_ = c.Close()
	}
	waitStat(t, s.Edges[0].Edge, func(st edge.Stats) bool { return st.Connections == 0 })
	for _, ip := range []string{"198.51.100.1", "198.51.100.1", "198.51.100.3"} {
		c, err := dialWith(url, xff(ip))
		if err != nil {
			t.Fatalf("slots not given back: %s: %v", ip, err)
		}
		t.Cleanup(func() { _ = c.Abort() })
	}
}

// TestConnLimitConcurrent: upgrades that run at once cannot pass the edge's
// bound together (each takes its slot before its handshake, not after).
func TestConnLimitConcurrent(t *testing.T) {
	const limit, dials = 4, 32
	s := stack.Start(t, stack.Options{Edge: edge.Config{MaxConns: limit, MaxConnsPerIP: -1}})
	url := s.Edges[0].URL
	type result struct {
		c   *client.Client
		err error
	}
	results := make(chan result, dials)
	start := make(chan struct{})
	for range dials {
		go func() {
			<-start
			c, err := dialWith(url, nil)
			results <- result{c, err}
		}()
	}
	close(start)
	admitted, full := 0, 0
	for range dials {
		r := <-results
		switch {
		case r.err == nil:
			admitted++
			t.Cleanup(func() { _ = r.c.Abort() })
		case statusOf(r.err) == http.StatusServiceUnavailable:
			full++
		default:
			t.Errorf("dial: %v", r.err)
		}
	}
	if admitted != limit || full != dials-limit {
		t.Fatalf("%d admitted, %d refused with 503; want %d and %d", admitted, full, limit, dials-limit)
	}
}

func TestMessageLimits(t *testing.T) {
	s := stack.Start(t, stack.Options{Edge: edge.Config{Rate: 50, Burst: 20, MaxLogins: 3, MaxCandidates: 5}})
	url := s.Edges[0].URL

	t.Run("candidates per call", func(t *testing.T) {
		a, b := login(t, url, "ca"), login(t, url, "cb")
		send(t, a, `{"type":"offer","name":"cb","offer":1}`)
		expect(t, b, `{"type":"offer","offer":1,"name":"ca"}`)
		for i := range 6 {
			send(t, a, `{"type":"candidate","name":"cb","candidate":1}`)
			if i < 5 {
				expect(t, b, `{"type":"candidate","candidate":1}`)
			}
		}
		if m := recv(t, a); m.Type != "error" || !strings.Contains(m.Message, "too many candidates") {
			t.Fatalf("got %s", m.Raw)
		}
		// A new offer starts a new call. (Ten messages on this connection
		// in all, login included: within the burst of 20, so the rate
		// limit plays no part here.)
		send(t, a, `{"type":"offer","name":"cb","offer":2}`)
		expect(t, b, `{"type":"offer","offer":2,"name":"ca"}`)
		send(t, a, `{"type":"candidate","name":"cb","candidate":2}`)
		expect(t, b, `{"type":"candidate","candidate":2}`)
	})

	t.Run("login attempts", func(t *testing.T) {
		login(t, url, "taken")
		c := dial(t, url)
		for range 3 {
			send(t, c, `{"type":"login","name":"taken"}`)
			if m := recv(t, c); m.Success {
				t.Fatal("took a taken name")
			}
		}
		send(t, c, `{"type":"login","name":"taken"}`)
		waitClosed(t, c)
		if code, _ := c.CloseStatus(); code != ws.StatusPolicyViolation {
			t.Fatalf("close code %d, want 1008", code)
		}
	})

	t.Run("login over the rate", func(t *testing.T) {
		// The burst used up by 25 bad messages written at once; the login
		// behind them in the same write is over the rate, and gets its
		// login reply.
		nc := rawDial(t, nil, hostport(url))
		var all bytes.Buffer
		for range 25 {
			_ = ws.WriteFrame(&all, ws.MaskFrameInPlace(ws.NewTextFrame([]byte(`{"type":"x"}`))))
		}
		_ = ws.WriteFrame(&all, ws.MaskFrameInPlace(ws.NewTextFrame([]byte(`{"type":"login","name":"hasty"}`))))
		if _, err := nc.Write(all.Bytes()); err != nil {
			t.Fatal(err)
		}
		for {
			f := rawRecv(t, nc)
			if m := string(f.Payload); strings.HasPrefix(m, `{"type":"login"`) {
				if !strings.HasPrefix(m, `{"type":"login","success":false,"message":"rate limit exceeded`) {
					t.Fatalf("login over the rate: %s", m)
				}
				break
			}
		}
	})

	t.Run("flood", func(t *testing.T) {
		f := login(t, url, "flooder")
		other, peer := login(t, url, "calm"), login(t, url, "calm-peer")
		var limited bool
		for i := 0; i < 2000; i++ {
			if f.SendRaw([]byte(`{"type":"candidate","name":"calm-peer","candidate":0}`)) != nil {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for {
			m, err := f.Recv(ctx)
			if err != nil {
				break
			}
			if m.Type == "error" && strings.Contains(m.Message, "rate limit") {
				limited = true
			}
		}
		if !limited {
			t.Fatal("no rate-limit error frame")
		}
		if code, _ := f.CloseStatus(); code != ws.StatusPolicyViolation {
			t.Fatalf("flooder closed with %d, want 1008", code)
		}
		// Others are unaffected.
		send(t, other, `{"type":"offer","name":"calm-peer","offer":1}`)
		for {
			m := recv(t, peer)
			if m.Type == "offer" {
				break
			}
		}
	})
}
