package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

// The Go client against the whole system, across two edges: presence, a
// room (join, joined, room message, part), app messages, and a resumable
// session that drops and is resumed on the other edge with what was sent
// to it meanwhile.
func TestClientRoomsPresenceResume(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	dial := func(url string) *client.Client {
		t.Helper()
		c, err := client.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	recv := func(c *client.Client, who, typ string) client.Message {
		t.Helper()
		m, err := c.Recv(ctx)
		if err != nil || m.Type != typ {
			t.Fatalf("%s: %v %s; want a %s frame", who, err, m.Raw, typ)
		}
		return m
	}

	ann := dial(s.Edges[0].URL)
	m, err := ann.LoginResumable(ctx, "ann")
	if err != nil || m.Resume == "" {
		t.Fatalf("ann: %v, token %q", err, m.Resume)
	}
	token := m.Resume
	bob := login(t, s.Edges[1].URL, "bob")

	if err := bob.Watch("ann", "zed"); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		m := recv(bob, "bob", "presence")
		got[m.Name] = m.Online
	}
	if !got["ann"] || got["zed"] {
		t.Fatalf("presence %v, want ann online and zed not", got)
	}

	if users, err := ann.Join(ctx, "r"); err != nil || len(users) != 0 {
		t.Fatalf("ann joins: %v %v", users, err)
	}
	if users, err := bob.Join(ctx, "r"); err != nil || !slices.Equal(users, []string{"ann"}) {
		t.Fatalf("bob joins: %v %v; want [ann]", users, err)
	}
	if _, err := bob.Join(ctx, "r"); !errors.Is(err, client.ErrRefused) {
		t.Fatalf("bob joins again: %v, want ErrRefused", err)
	}
	if m := recv(ann, "ann", "joined"); m.Room != "r" || m.Name != "bob" {
		t.Fatalf("ann: %s", m.Raw)
	}
	if err := bob.RoomMessage("r", map[string]int{"hi": 1}); err != nil {
		t.Fatal(err)
	}
	if m := recv(ann, "ann", "message"); m.Room != "r" || m.Name != "bob" || string(m.Data) != `{"hi":1}` {
		t.Fatalf("ann: %s", m.Raw)
	}
	if err := ann.Offer("bob", json.RawMessage(`{"type":"offer","sdp":"v=0"}`)); err != nil {
		t.Fatal(err)
	}
	if m := recv(bob, "bob", "offer"); m.Name != "ann" {
		t.Fatalf("bob: %s", m.Raw)
	}

	// ann's network goes away; what bob sends meanwhile waits for her.
	if err := ann.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := bob.Message("ann", "while you were away"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(s.Edges[1].URL).Resume(ctx, "ann", "not-the-token"); !errors.Is(err, client.ErrBadResumeToken) {
		t.Fatalf("resume with a wrong token: %v, want ErrBadResumeToken", err)
	}
	ann2 := dial(s.Edges[1].URL)
	m, err = ann2.Resume(ctx, "ann", token)
	if err != nil || !m.Resumed || m.Resume == "" || m.Resume == token {
		t.Fatalf("resume: %v %s", err, m.Raw)
	}
	if m := recv(ann2, "ann", "message"); m.Name != "bob" || string(m.Data) != `"while you were away"` {
		t.Fatalf("ann after the resume: %s", m.Raw)
	}
	// The session kept its room and its peer: bob got no leave, and room
	// messages reach ann on her new edge.
	if err := bob.RoomMessage("r", "still here?"); err != nil {
		t.Fatal(err)
	}
	if m := recv(ann2, "ann", "message"); m.Room != "r" || string(m.Data) != `"still here?"` {
		t.Fatalf("ann: %s", m.Raw)
	}
	if err := ann2.Message("bob", "back"); err != nil {
		t.Fatal(err)
	}
	if m := recv(bob, "bob", "message"); m.Name != "ann" || string(m.Data) != `"back"` {
		t.Fatalf("bob: %s (want ann's message, and no leave before it)", m.Raw)
	}

	if err := ann2.Part(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if m := recv(bob, "bob", "parted"); m.Name != "ann" || m.Room != "r" {
		t.Fatalf("bob: %s", m.Raw)
	}
	if err := ann2.Part(ctx, "r"); !errors.Is(err, client.ErrRefused) {
		t.Fatalf("part again: %v, want ErrRefused", err)
	}
	if err := ann2.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 2 {
		m, err := bob.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(m.Raw)] = true
	}
	if !seen[`{"type":"leave"}`] || !seen[`{"type":"presence","name":"ann","online":false}`] {
		t.Fatalf("bob after ann closed: %v; want leave and presence offline", seen)
	}
}
