package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
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
	wsPort, natsPort, e2Port, e3Port := freePort(t), freePort(t), freePort(t), freePort(t)
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
	startProc(t, filepath.Join(bin, "edge"), "-listen", fmt.Sprintf("127.0.0.1:%d", e2Port), "-nats", natsURL, "-id", "e2")
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
	// While NATS is down: a client leaves properly, and an edge dies.
	_ = quit.Close()
	_ = e3.Cmd.Process.Signal(syscall.SIGKILL)
	<-e3.Done
	time.Sleep(500 * time.Millisecond)

	startSignal()
	up := time.Now()
	taken := func(name string) bool {
		c := dial(t, main, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Login(ctx, name)
		_ = c.Abort() // held for the resume grace if it got the name; no matter here
		if err != nil && err != client.ErrNameTaken {
			return true // not answered yet: still coming up
		}
		return err == client.ErrNameTaken
	}
	waitFree := func(name string, within time.Duration) time.Duration {
		for taken(name) {
			if time.Since(up) > within {
				t.Fatalf("%s still taken %v after the restart", name, time.Since(up))
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(up)
	}
	quitFree := waitFree("quit", 15*time.Second)
	doomedFree := waitFree("doomed", 20*time.Second)
	if !taken("keep") {
		t.Fatal(`"keep" was lost in the restart`)
	}
	// And keep's connection works again through the restarted NATS.
	other := loginRetry(t, main, "other", 10*time.Second)
	_ = other.SendRaw([]byte(`{"type":"offer","name":"keep","offer":1}`))
	expect(t, keep, `{"type":"offer","offer":1,"name":"other"}`)
	t.Logf("after restart: closed-during-restart name free in %v, killed edge's name free in %v", quitFree, doomedFree)
}
