package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/services/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeServer accepts one WebSocket connection and answers each client frame
// with the frames reply returns for it (the server side of a script).
func fakeServer(t *testing.T, reply func(frame map[string]any) []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := ws.Upgrade(conn); err != nil {
			return
		}
		for {
			data, op, err := wsutil.ReadClientData(conn)
			if err != nil || op == ws.OpClose {
				return
			}
			var f map[string]any
			if json.Unmarshal(data, &f) != nil {
				return
			}
			for _, out := range reply(f) {
				if wsutil.WriteServerText(conn, []byte(out)) != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return "ws://" + ln.Addr().String() + "/"
}

func dial(t *testing.T, url string) (*client.Client, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, ctx
}

// Join waits for its own reply and leaves what came before it queued.
func TestJoinKeepsOtherMessages(t *testing.T) {
	url := fakeServer(t, func(f map[string]any) []string {
		switch f["type"] {
		case "join":
			if f["room"] == "full" {
				return []string{`{"type":"join","success":false,"room":"full","message":"room is full (limit 16 members, -max-room)"}`}
			}
			return []string{
				`{"type":"message","room":"r","name":"bob","data":{"n":1}}`,
				`{"type":"join","success":true,"room":"other","users":[]}`,
				`{"type":"join","success":true,"room":"r","users":["bob","carol"]}`,
			}
		case "part":
			return []string{`{"type":"part","success":true,"room":"r"}`}
		}
		return nil
	})
	c, ctx := dial(t, url)
	users, err := c.Join(ctx, "r")
	if err != nil || !slices.Equal(users, []string{"bob", "carol"}) {
		t.Fatalf("Join: %v, %v; want [bob carol]", users, err)
	}
	for _, want := range []string{"message", "join"} {
		m, err := c.Recv(ctx)
		if err != nil || m.Type != want {
			t.Fatalf("Recv: %v %s; want the %s that came before the reply", err, m.Raw, want)
		}
		if want == "message" && (m.Room != "r" || m.Name != "bob" || string(m.Data) != `{"n":1}`) {
			t.Errorf("room message decoded as %+v", m)
		}
	}
	if _, err := c.Join(ctx, "full"); !errors.Is(err, client.ErrRefused) {
		t.Errorf("Join of a full room: %v, want ErrRefused", err)
	}
	if err := c.Part(ctx, "r"); err != nil {
		t.Errorf("Part: %v", err)
	}
}

// The login variants send what the protocol says and decode the replies.
func TestLoginResumableAndResume(t *testing.T) {
	sent := make(chan map[string]any, 8)
	url := fakeServer(t, func(f map[string]any) []string {
		sent <- f
		switch {
		case f["resumable"] == true:
			return []string{`{"type":"login","success":true,"resume":"t1"}`}
		case f["resume"] == "t1":
			return []string{`{"type":"login","success":true,"resume":"t2","resumed":true}`, `{"type":"offer","offer":{},"name":"bob"}`}
		case f["resume"] != nil:
			return []string{`{"type":"login","success":false,"message":"resume token does not match"}`}
		case f["type"] == "watch":
			return []string{`{"type":"presence","name":"bob","online":true}`}
		}
		return nil
	})
	c, ctx := dial(t, url)
	m, err := c.LoginResumable(ctx, "alice")
	if err != nil || m.Resume != "t1" {
		t.Fatalf("LoginResumable: %v, token %q", err, m.Resume)
	}
	if f := <-sent; f["name"] != "alice" || f["resumable"] != true {
		t.Errorf("sent %v", f)
	}
	if _, err := c.Resume(ctx, "alice", "wrong"); !errors.Is(err, client.ErrBadResumeToken) {
		t.Errorf("Resume with a wrong token: %v, want ErrBadResumeToken", err)
	}
	if f := <-sent; f["resume"] != "wrong" || f["resumable"] != nil {
		t.Errorf("sent %v", f)
	}
	m, err = c.Resume(ctx, "alice", "t1")
	if err != nil || !m.Resumed || m.Resume != "t2" {
		t.Fatalf("Resume: %v, %+v", err, m)
	}
	<-sent
	if m, err := c.Recv(ctx); err != nil || m.Type != "offer" || m.Name != "bob" {
		t.Errorf("after the resume: %v %s; want the kept offer", err, m.Raw)
	}
	if err := c.Watch("bob"); err != nil {
		t.Fatal(err)
	}
	if f := <-sent; f["type"] != "watch" || !slices.Equal(toStrings(f["names"]), []string{"bob"}) {
		t.Errorf("sent %v", f)
	}
	if m, err := c.Recv(ctx); err != nil || m.Type != "presence" || m.Name != "bob" || !m.Online {
		t.Errorf("presence: %v %+v", err, m)
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, s := range l {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}
