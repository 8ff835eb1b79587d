package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/subject"
)

// natsServer is nats-server, built from the module version in go.mod.
func natsServer(t *testing.T) string { return filepath.Join(binaries(t), "nats-server") }

// TestNATSRestart stops the NATS server under a registry and two edge
// processes while clients relay, then starts it again on the same store:
// no process exits, clients stay connected and get error frames (not
// silence) meanwhile, held names stay held, and logins and calls work again.
func TestNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binaries and a nats-server")
	}
	bin := binaries(t)
	ns := natsServer(t)
	natsPort, e1Port, e2Port := freePort(t), freePort(t), freePort(t)
	store := t.TempDir()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	startNATS := func() *proc {
		p := startProc(t, ns, "-a", "127.0.0.1", "-p", fmt.Sprint(natsPort), "-js", "-sd", store)
		waitTCP(t, fmt.Sprintf("127.0.0.1:%d", natsPort))
		return p
	}
	nats1 := startNATS()
	reg := startProc(t, filepath.Join(bin, "registry"), "-nats", natsURL)
	waitAnswers(t, natsURL, "$SRV.PING.registry") // it serves once its buckets are there
	e1 := startProc(t, filepath.Join(bin, "edge"), "-nats", natsURL, "-listen", fmt.Sprintf("127.0.0.1:%d", e1Port), "-id", "e1")
	e2 := startProc(t, filepath.Join(bin, "edge"), "-nats", natsURL, "-listen", fmt.Sprintf("127.0.0.1:%d", e2Port), "-id", "e2")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", e1Port))
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", e2Port))
	waitAnswers(t, natsURL, subject.EdgeStatus("e1"))
	waitAnswers(t, natsURL, subject.EdgeStatus("e2"))
	url1, url2 := fmt.Sprintf("ws://127.0.0.1:%d/", e1Port), fmt.Sprintf("ws://127.0.0.1:%d/", e2Port)

	a := loginRetry(t, url1, "a", 10*time.Second)
	b := loginRetry(t, url2, "b", 10*time.Second)

	// Load: a sends b a candidate every 20ms (within the default rate limit)
	// and b reads them; during the
	// outage a gets error frames instead.
	var sent, delivered, errored atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad() // if the test fails under load
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if a.SendRaw([]byte(fmt.Sprintf(`{"type":"candidate","name":"b","candidate":%d}`, i))) == nil {
				sent.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			m, err := b.Recv(ctx)
			cancel()
			if err == nil && m.Type == "candidate" {
				delivered.Add(1)
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	drainErrors := func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			m, err := a.Recv(ctx)
			cancel()
			if err != nil {
				return
			}
			if m.Type == "error" {
				errored.Add(1)
			}
		}
	}
	waitUntil(t, "b receiving a's candidates before the outage", 10*time.Second, func() bool { return delivered.Load() > 0 })

	_ = nats1.Cmd.Process.Signal(syscall.SIGKILL)
	<-nats1.Done
	down := time.Now()
	// Every process sees the outage, and a's relays get error frames.
	for _, p := range []*proc{reg, e1, e2} {
		waitLog(t, p, "nats disconnected", 10*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	for errored.Load() == 0 {
		m, err := a.Recv(ctx)
		if err != nil {
			t.Fatalf("relays during the outage got no error frame: %v", err)
		}
		if m.Type == "error" {
			errored.Add(1)
		}
	}
	cancel()
	select {
	case <-a.Done():
		t.Fatal("client a was disconnected by the NATS outage")
	case <-b.Done():
		t.Fatal("client b was disconnected by the NATS outage")
	default:
	}
	// A login during the outage is answered too.
	c := dial(t, url1, "")
	_ = c.SendRaw([]byte(`{"type":"login","name":"during"}`))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	m, err := c.Recv(ctx)
	cancel()
	if err != nil || m.Type != "login" || m.Success || !strings.Contains(m.Message, "unavailable") {
		t.Fatalf("login during the outage: %s %v", m.Raw, err)
	}

	startNATS()
	up := time.Now()
	for _, p := range []*proc{reg, e1, e2} {
		waitLog(t, p, "nats reconnected", 30*time.Second)
	}
	// Logins work again once the registry has its buckets back.
	var firstLogin time.Duration
	if !within(30*time.Second, func() bool {
		c := dial(t, url2, "")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = c.Login(ctx, "after")
		cancel()
		_ = c.Abort()
		firstLogin = time.Since(up)
		return err == nil
	}) {
		t.Fatalf("no login within 30s of NATS restarting: %v", err)
	}
	before := delivered.Load()
	waitUntil(t, "relaying between the old users recovering", 15*time.Second, func() bool { return delivered.Load() > before })
	stopLoad()
	drainErrors()
	t.Logf("NATS down %v; restart -> first successful login %v; relayed %d of %d, %d error frames",
		up.Sub(down).Round(time.Millisecond), firstLogin.Round(time.Millisecond), delivered.Load(), sent.Load(), errored.Load())

	// The names held across the outage are still held, by their owners.
	for _, n := range []string{"a", "b"} {
		c := dial(t, url2, "")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Login(ctx, n)
		cancel()
		if err != client.ErrNameTaken {
			t.Errorf("%s: login by another connection: %v, want refused", n, err)
		}
	}
	_ = a.SendRaw([]byte(`{"type":"offer","name":"b","offer":"again"}`))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := b.Recv(ctx)
		cancel()
		if err != nil {
			t.Fatalf("offer after recovery: %v", err)
		}
		if m.Type == "offer" {
			break
		}
	}
	for _, p := range []*proc{reg, e1, e2} {
		select {
		case <-p.Done:
			t.Fatalf("a process exited: %v\n%s", p.Err, p.Out.String())
		default:
		}
	}
	// Neither client was disconnected, then or since.
	select {
	case <-a.Done():
		t.Fatal("client a was disconnected")
	case <-b.Done():
		t.Fatal("client b was disconnected")
	default:
	}
	if strings.Contains(reg.Out.String(), "panic") || strings.Contains(e1.Out.String(), "panic") {
		t.Fatal("panic in a service log")
	}
}

// loginRetry logs in, retrying while the system is still coming up.
func loginRetry(t *testing.T, url, name string, d time.Duration) *client.Client {
	t.Helper()
	var c *client.Client
	var err error
	if !within(d, func() bool {
		if c != nil {
			_ = c.Abort()
		}
		c = dial(t, url, "")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = c.Login(ctx, name)
		cancel()
		return err == nil
	}) {
		t.Fatalf("login %s: %v", name, err)
	}
	return c
}
