package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
)

// TestKillEdge kill -9s an edge while two of its users are in calls with
// users on another edge. With the default lease (10s) both peers must get
// leave, and the names must be free again, within 15s.
func TestKillEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and waits for a lease to lapse")
	}
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

	a1, a2 := dial(t, doomed, "a1"), dial(t, doomed, "a2")
	b1, b2 := dial(t, live, "b1"), dial(t, live, "b2")
	// a1 calls b1; b2 calls a2: peers known on both sides of each call.
	_ = a1.SendRaw([]byte(`{"type":"offer","name":"b1","offer":1}`))
	expect(t, b1, `{"type":"offer","offer":1,"name":"a1"}`)
	_ = b2.SendRaw([]byte(`{"type":"offer","name":"a2","offer":2}`))
	expect(t, a2, `{"type":"offer","offer":2,"name":"b2"}`)
	_ = a2.SendRaw([]byte(`{"type":"answer","name":"b2","answer":3}`))
	expect(t, b2, `{"type":"answer","answer":3}`)

	start := time.Now()
	if err := victim.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	leaveAfter := make([]time.Duration, 2)
	for i, c := range []*client.Client{b1, b2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, err := c.Recv(ctx)
			if err != nil || m.Type != "leave" {
				t.Errorf("peer %d: got %s, %v; want leave", i+1, m.Raw, err)
				return
			}
			leaveAfter[i] = time.Since(start)
		}()
	}
	wg.Wait()
	// The names come free.
	var freeAfter time.Duration
	for _, name := range []string{"a1", "a2"} {
		for {
			c := dial(t, live, "")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Login(ctx, name)
			cancel()
			if err == nil {
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%s still taken %v after kill -9", name, time.Since(start))
			}
			time.Sleep(100 * time.Millisecond)
		}
		freeAfter = time.Since(start)
	}
	t.Logf("kill -9 -> leave delivered: %v, %v; -> names free: %v", leaveAfter[0], leaveAfter[1], freeAfter)
	for _, d := range append(leaveAfter, freeAfter) {
		if d > 15*time.Second {
			t.Errorf("took %v, over the 15s bound", d)
		}
	}
}
