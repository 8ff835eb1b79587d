package main_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/subject"
)

// TestRestartSignal restarts signal (embedded NATS, registry, edge) with the
// same -data while two edge processes stay up: names held on the surviving
// edge survive; a name whose connection closed during the restart, and the
// names of an edge killed during it, are released afterwards.
func TestRestartSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries")
	}
	bin := binaries(t)
	wsPort, natsPort, e2Port, e3Port, e2Admin := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	data := t.TempDir()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	startSignal := func() *proc {
		p := startProc(t, filepath.Join(bin, "signal"),
			"-listen", fmt.Sprintf("127.0.0.1:%d", wsPort),
			"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
			"-data", data, "-id", "main")
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsPort))
		return p
	}
	sig := startSignal()
	startProc(t, filepath.Join(bin, "edge"), "-listen", fmt.Sprintf("127.0.0.1:%d", e2Port), "-nats", natsURL, "-id", "e2",
		"-admin", fmt.Sprintf("127.0.0.1:%d", e2Admin))
	e3 := startProc(t, filepath.Join(bin, "edge"), "-listen", fmt.Sprintf("127.0.0.1:%d", e3Port), "-nats", natsURL, "-id", "e3")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", e2Port))
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", e3Port))
	main := fmt.Sprintf("ws://127.0.0.1:%d/", wsPort)
	url2 := fmt.Sprintf("ws://127.0.0.1:%d/", e2Port)
	url3 := fmt.Sprintf("ws://127.0.0.1:%d/", e3Port)

	keep := loginRetry(t, url2, "keep", 10*time.Second)
	quit := loginRetry(t, url2, "quit", 10*time.Second)
	loginRetry(t, url3, "doomed", 10*time.Second)

	_ = sig.Cmd.Process.Signal(syscall.SIGTERM)
	<-sig.Done
	if sig.Err != nil {
		t.Fatalf("signal exit: %v", sig.Err)
	}
	// While NATS is down: a client leaves properly (the edge answers its
	// close frame, ends its session and asks for the release of its name,
	// as its own metrics tell without NATS), and an edge dies.
	_ = quit.Close()
	if code, _ := quit.CloseStatus(); code != ws.StatusNormalClosure {
		t.Fatalf("quit's close answered with %d, want 1000", code)
	}
	metrics2 := fmt.Sprintf("http://127.0.0.1:%d/metrics", e2Admin)
	waitUntil(t, "e2 down to one user", 10*time.Second, func() bool {
		return strings.Contains(httpGet(t, metrics2), "\nsignal_edge_users{edge=\"e2\"} 1\n")
	})
	_ = e3.Cmd.Process.Signal(syscall.SIGKILL)
	<-e3.Done

	startSignal()
	up := time.Now()
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", natsPort))
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// entry reports whether name has an entry in the users bucket; known is
	// false while the bucket cannot be read (JetStream still recovering).
	entry := func(name string) (present, known bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, subject.UsersBucket)
		if err != nil {
			return false, false
		}
		_, err = kv.Get(ctx, names.Token(name))
		switch {
		case err == nil:
			return true, true
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return false, true
		}
		return false, false
	}
	// A name is released when its entry is gone; then it is free at once.
	waitFree := func(name string, d time.Duration) time.Duration {
		waitUntil(t, name+" released after the restart", d, func() bool {
			present, known := entry(name)
			return known && !present
		})
		free := time.Since(up)
		dial(t, main, name)
		return free
	}
	quitFree := waitFree("quit", 15*time.Second)
	doomedFree := waitFree("doomed", 20*time.Second)
	if present, _ := entry("keep"); !present {
		t.Fatal(`"keep" was lost in the restart`)
	}
	c := dial(t, main, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = c.Login(ctx, "keep")
	cancel()
	if err != client.ErrNameTaken {
		t.Fatalf(`login as "keep" by another connection: %v, want refused`, err)
	}
	// And keep's connection works again through the restarted NATS.
	other := loginRetry(t, main, "other", 10*time.Second)
	_ = other.SendRaw([]byte(`{"type":"offer","name":"keep","offer":1}`))
	expect(t, keep, `{"type":"offer","offer":1,"name":"other"}`)
	t.Logf("after restart: closed-during-restart name free in %v, killed edge's name free in %v", quitFree, doomedFree)
}
