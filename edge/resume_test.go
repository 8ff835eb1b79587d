package edge_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/stack"
)

// loginResume logs in with a resume token and returns the reply.
func loginResume(t *testing.T, c *client.Client, name, token string) client.Message {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"type": "login", "name": name, "resume": token})
	send(t, c, string(b))
	return recv(t, c)
}

func resumeToken(t *testing.T, m client.Message) string {
	t.Helper()
	var v struct {
		Resume string `json:"resume"`
	}
	if err := json.Unmarshal(m.Raw, &v); err != nil || len(v.Resume) < 32 {
		t.Fatalf("no resume token in %s", m.Raw)
	}
	return v.Resume
}

func TestResume(t *testing.T) {
	const grace = 700 * time.Millisecond
	s := stack.Start(t, stack.Options{Edges: 2, Edge: edge.Config{ResumeGrace: grace}})
	e1, e2 := s.Edges[0].URL, s.Edges[1].URL
	peer := login(t, e1, "peer")

	// call sets up "mobile" in a call with peer and returns its token.
	call := func(t *testing.T) (*client.Client, string) {
		// The previous subtest's connection may still be releasing it.
		c := dial(t, e1)
		m := loginResume(t, c, "mobile", "")
		for deadline := time.Now().Add(wait); !m.Success; m = loginResume(t, c, "mobile", "") {
			if time.Now().After(deadline) {
				t.Fatalf("login: %s", m.Raw)
			}
			time.Sleep(20 * time.Millisecond)
		}
		send(t, peer, `{"type":"offer","name":"mobile","offer":1}`)
		expect(t, c, `{"type":"offer","offer":1,"name":"peer"}`)
		send(t, c, `{"type":"answer","name":"peer","answer":2}`)
		expect(t, peer, `{"type":"answer","answer":2}`)
		return c, resumeToken(t, m)
	}
	hangUp := func(t *testing.T, c *client.Client) {
		_ = c.Close()
		expect(t, peer, `{"type":"leave"}`)
	}

	t.Run("within grace, on another edge", func(t *testing.T) {
		c, tok := call(t)
		_ = c.Abort() // the network drops: no close frame
		time.Sleep(100 * time.Millisecond)
		// Held: messages for it are refused, and nobody gets leave.
		send(t, peer, `{"type":"candidate","name":"mobile","candidate":0}`)
		if m := recv(t, peer); m.Type != "error" || m.Message != `user "mobile" is not online` {
			t.Fatalf("message for a held session: got %s", m.Raw)
		}
		c2 := dial(t, e2)
		start := time.Now()
		m := loginResume(t, c2, "mobile", tok)
		if !m.Success || !json.Valid(m.Raw) || !contains(m.Raw, `"resumed":true`) {
			t.Fatalf("resume: %s", m.Raw)
		}
		t.Logf("resumed in %v", time.Since(start))
		if resumeToken(t, m) == tok {
			t.Fatal("the token was not rotated")
		}
		// The call goes on: no leave for peer, and messages reach the new
		// connection.
		expectNothing(t, peer, grace+300*time.Millisecond)
		send(t, peer, `{"type":"candidate","name":"mobile","candidate":3}`)
		expect(t, c2, `{"type":"candidate","candidate":3}`)
		hangUp(t, c2)
	})

	t.Run("stale connection still open", func(t *testing.T) {
		stale, tok := call(t)
		c2 := dial(t, e2)
		if m := loginResume(t, c2, "mobile", tok); !m.Success {
			t.Fatalf("resume: %s", m.Raw)
		}
		select {
		case <-stale.Done():
		case <-time.After(wait):
			t.Fatal("the stale connection was not closed")
		}
		if code, _ := stale.CloseStatus(); code != 4002 {
			t.Fatalf("stale connection closed with %d, want 4002", code)
		}
		expectNothing(t, peer, 300*time.Millisecond)
		hangUp(t, c2)
	})

	t.Run("stale connection on the same edge", func(t *testing.T) {
		stale, tok := call(t)
		c2 := dial(t, e1)
		if m := loginResume(t, c2, "mobile", tok); !m.Success {
			t.Fatalf("resume: %s", m.Raw)
		}
		select {
		case <-stale.Done():
		case <-time.After(wait):
			t.Fatal("the stale connection was not closed")
		}
		send(t, peer, `{"type":"candidate","name":"mobile","candidate":4}`)
		expect(t, c2, `{"type":"candidate","candidate":4}`)
		hangUp(t, c2)
	})

	t.Run("taken-over connection speaks for nobody", func(t *testing.T) {
		hostport := strings.TrimSuffix(strings.TrimPrefix(e1, "ws://"), "/")
		raw := rawDial(t, nil, hostport)
		var reply struct {
			Success bool   `json:"success"`
			Resume  string `json:"resume"`
		}
		// The previous subtest's connection may still be releasing it.
		for deadline := time.Now().Add(wait); !reply.Success; time.Sleep(20 * time.Millisecond) {
			rawSend(t, raw, `{"type":"login","name":"mobile","resume":""}`)
			_ = raw.SetReadDeadline(time.Now().Add(wait))
			f, err := ws.ReadFrame(raw)
			if err != nil || time.Now().After(deadline) {
				t.Fatalf("login: %s %v", f.Payload, err)
			}
			_ = json.Unmarshal(f.Payload, &reply)
		}
		c2 := dial(t, e2)
		if m := loginResume(t, c2, "mobile", reply.Resume); !m.Success {
			t.Fatalf("resume: %s", m.Raw)
		}
		// The old socket ignores its close frame and keeps talking.
		rawSend(t, raw, `{"type":"offer","name":"peer","offer":"from the stale socket"}`)
		expectNothing(t, peer, 300*time.Millisecond)
		_ = c2.Close()
	})

	t.Run("wrong token", func(t *testing.T) {
		c, tok := call(t)
		_ = c.Abort()
		c2 := dial(t, e2)
		for _, bad := range []string{"wrong", tok[:len(tok)-1] + "x", ""} {
			m := loginResume(t, c2, "mobile", bad)
			if m.Success {
				t.Fatalf("token %q took the name: %s", bad, m.Raw)
			}
		}
		// The name stays taken until the grace ends, then the peer hears.
		expect(t, peer, `{"type":"leave"}`)
		if m := loginResume(t, c2, "mobile", ""); !m.Success {
			t.Fatalf("login after the grace: %s", m.Raw)
		}
		_ = c2.Close()
	})

	t.Run("after grace", func(t *testing.T) {
		c, tok := call(t)
		_ = c.Abort()
		start := time.Now()
		expect(t, peer, `{"type":"leave"}`)
		t.Logf("dropped session released and peer told after %v (grace %v)", time.Since(start), grace)
		// The old token resumes nothing: the login is a fresh one.
		c2 := dial(t, e2)
		m := loginResume(t, c2, "mobile", tok)
		if !m.Success || contains(m.Raw, `"resumed"`) {
			t.Fatalf("login after grace: %s", m.Raw)
		}
		_ = c2.Close()
	})

	t.Run("token bound to its name", func(t *testing.T) {
		c, tok := call(t)
		other := login(t, e1, "other")
		_ = other
		c2 := dial(t, e2)
		if m := loginResume(t, c2, "other", tok); m.Success {
			t.Fatalf("mobile's token took other's name: %s", m.Raw)
		}
		hangUp(t, c)
	})
}

func contains(b []byte, s string) bool {
	return len(s) == 0 || (len(b) >= len(s) && indexOf(string(b), s) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
