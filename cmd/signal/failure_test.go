package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/subject"
)

// TestKillEdge kill -9s an edge while two of its users are in calls with
// users on another edge, and a third user's resumable session is held on
// it (its connection dropped, frames kept for it). The NATS server reports
// the dead edge's connection at once, so both peers get leave and the names
// are free well within a second, not after the 10 s lease; the kept frames
// die with the edge, and a resume with the held session's token is a fresh
// login.
func TestKillEdge(t *testing.T) {
	bin := binaries(t)
	wsPort, natsPort, edgePort := freePort(t), freePort(t), freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsPort),
		"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-data", t.TempDir(), "-id", "survivor")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsPort))
	victim := startProc(t, filepath.Join(bin, "edge"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", edgePort), "-nats", natsURL, "-id", "victim")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", edgePort))
	live := fmt.Sprintf("ws://127.0.0.1:%d/", wsPort)
	doomed := fmt.Sprintf("ws://127.0.0.1:%d/", edgePort)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	offline, err := nc.SubscribeSync("presence.offline.*")
	if err != nil {
		t.Fatal(err)
	}

	a1, a2 := dial(t, doomed, "a1"), dial(t, doomed, "a2")
	b1, b2 := dial(t, live, "b1"), dial(t, live, "b2")
	// a1 calls b1; b2 calls a2: peers known on both sides of each call.
	_ = a1.SendRaw([]byte(`{"type":"offer","name":"b1","offer":1}`))
	expect(t, b1, `{"type":"offer","offer":1,"name":"a1"}`)
	_ = b2.SendRaw([]byte(`{"type":"offer","name":"a2","offer":2}`))
	expect(t, a2, `{"type":"offer","offer":2,"name":"b2"}`)
	_ = a2.SendRaw([]byte(`{"type":"answer","name":"b2","answer":3}`))
	expect(t, b2, `{"type":"answer","answer":3}`)
	// h holds a resumable session on the doomed edge, in a call with b3;
	// its connection drops and b3's next frame is kept for it there.
	h := dial(t, doomed, "")
	_ = h.SendRaw([]byte(`{"type":"login","name":"h","resumable":true}`))
	rep := recvMsg(t, h)
	var tok struct {
		Resume string `json:"resume"`
	}
	if err := json.Unmarshal(rep.Raw, &tok); err != nil || tok.Resume == "" {
		t.Fatalf("resumable login: %s", rep.Raw)
	}
	b3 := dial(t, live, "b3")
	_ = h.SendRaw([]byte(`{"type":"offer","name":"b3","offer":4}`))
	expect(t, b3, `{"type":"offer","offer":4,"name":"h"}`)
	_ = h.Abort()
	waitUntil(t, "the victim holding h's session", 10*time.Second, func() bool { return edgeStatus(t, nc, "victim").Held == 1 })
	_ = b3.SendRaw([]byte(`{"type":"candidate","name":"h","candidate":5}`))
	// Kept there: had the kill come first, b3's edge would have heard "no
	// responders", told b3 that h is not online and forgotten the call,
	// and b3 would never get leave.
	waitUntil(t, "b3's candidate kept for h on the victim", 10*time.Second, func() bool { return edgeStatus(t, nc, "victim").Kept == 1 })

	start := time.Now()
	if err := victim.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	leaveAfter := make([]time.Duration, 3)
	for i, c := range []*client.Client{b1, b2, b3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for {
				m, err := c.Recv(ctx)
				if err != nil {
					t.Errorf("peer %d: %v; want leave", i+1, err)
					return
				}
				if m.Type == "leave" {
					break
				}
				if m.Type != "error" { // b3 may hear that h is not online
					t.Errorf("peer %d: got %s, want leave", i+1, m.Raw)
				}
			}
			leaveAfter[i] = time.Since(start)
		}()
	}
	wg.Wait()
	var freeAfter time.Duration
	for n := 0; n < 3; n++ {
		if _, err := offline.NextMsg(20 * time.Second); err != nil {
			t.Fatalf("names of the killed edge not released: %v", err)
		}
		freeAfter = time.Since(start)
	}
	for _, name := range []string{"a1", "a2"} {
		c := dial(t, live, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := c.Login(ctx, name); err != nil {
			t.Fatalf("%s not free after the release: %v", name, err)
		}
		cancel()
	}
	// The held session died with its edge: its token logs in fresh.
	h2 := dial(t, live, "")
	_ = h2.SendRaw([]byte(`{"type":"login","name":"h","resume":"` + tok.Resume + `"}`))
	if m := recvMsg(t, h2); !m.Success || strings.Contains(string(m.Raw), `"resumed"`) {
		t.Fatalf("resume after its edge died: %s", m.Raw)
	}
	t.Logf("kill -9 -> leave delivered: %v, %v, %v; -> names free: %v", leaveAfter[0], leaveAfter[1], leaveAfter[2], freeAfter)
	for _, d := range append(leaveAfter, freeAfter) {
		// Well under the 10 s lease: the disconnect event did it.
		if d > 5*time.Second {
			t.Errorf("took %v: the lease did it, not the disconnect event", d)
		}
	}
}

// TestExternalNATS: signal with -nats embeds no NATS server and runs its
// registry and edge against the one named: a second signal beside the
// first, on the first's NATS, serves calls with it.
func TestExternalNATS(t *testing.T) {
	bin := binaries(t)
	wsA, wsB, natsPort := freePort(t), freePort(t), freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsA),
		"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-data", t.TempDir(), "-id", "first")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsA))
	second := startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsB), "-nats", natsURL, "-id", "second")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsB))
	waitLog(t, second, "no embedded server", 10*time.Second)
	waitAnswers(t, natsURL, subject.EdgeStatus("second"))

	a := dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", wsA), "ext-a")
	b := dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", wsB), "ext-b")
	_ = a.SendRaw([]byte(`{"type":"offer","name":"ext-b","offer":1}`))
	expect(t, b, `{"type":"offer","offer":1,"name":"ext-a"}`)
	_ = b.SendRaw([]byte(`{"type":"answer","name":"ext-a","answer":2}`))
	expect(t, a, `{"type":"answer","answer":2}`)
	// One name in the whole system: the second's users are in the first's
	// bucket.
	c := dial(t, fmt.Sprintf("ws://127.0.0.1:%d/", wsA), "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := c.Login(ctx, "ext-b"); err == nil || m.Success {
		t.Fatalf("ext-b taken twice: %s, %v", m.Raw, err)
	}
}
