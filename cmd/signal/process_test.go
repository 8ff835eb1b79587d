package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/proctest"
	"github.com/natsrtc/signal/services/subject"
)

func TestMain(m *testing.M) { proctest.Main(m) }

var (
	binaries = proctest.Binaries
	freePort = proctest.FreePort
	waitTCP  = proctest.WaitTCP
)

type proc = proctest.Proc

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return proctest.Start(t, bin, args...)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func dial(t *testing.T, url, name string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	if name != "" {
		if m, err := c.Login(ctx, name); err != nil {
			t.Fatalf("login %s: %v %s", name, err, m.Raw)
		}
	}
	return c
}

// recvMsg receives one message within 10 s.
func recvMsg(t *testing.T, c *client.Client) client.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func expect(t *testing.T, c *client.Client, want string) {
	t.Helper()
	if m := recvMsg(t, c); string(m.Raw) != want {
		t.Fatalf("got %s, want %s", m.Raw, want)
	}
}

// within polls cond until it holds (true) or d has passed (false).
func within(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// waitUntil polls cond until it holds, and fails the test if it does not
// within d; what names the state waited for in the failure.
func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	if !within(d, cond) {
		t.Fatalf("%s: not within %v", what, d)
	}
}

// waitLog waits until p has written text to its output.
func waitLog(t *testing.T, p *proc, text string, d time.Duration) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%q in the output of %s", text, strings.Join(p.Cmd.Args, " ")), d, func() bool {
		return strings.Contains(p.Out.String(), text)
	})
}

// edgeStatus asks the edge id for its counters (edge.<id>.status); the zero
// Stats when it does not answer.
func edgeStatus(t *testing.T, nc *nats.Conn, id string) edge.Stats {
	t.Helper()
	var st edge.Stats
	m, err := nc.Request(subject.EdgeStatus(id), nil, time.Second)
	if err != nil {
		return st
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatalf("%s status %s: %v", id, m.Data, err)
	}
	return st
}

// waitAnswers waits until something on the NATS server at natsURL answers
// requests on subj: a micro service's ping subject, or an edge's status.
func waitAnswers(t *testing.T, natsURL, subj string) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitUntil(t, subj+" answered", 20*time.Second, func() bool {
		_, err := nc.Request(subj, nil, time.Second)
		return err == nil
	})
}

// TestBinaries runs the real binaries as a user would: signal (embedded
// NATS, registry, edge) plus a second edge process. Users on the two edges
// call each other, a name taken on one edge is refused on the other, the
// services are visible as micro services, and SIGTERM drains both processes
// with exit code 0 and a 1001 close to each client.
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	bin := binaries(t)
	wsPort, natsPort, edgePort, adminPort := freePort(t), freePort(t), freePort(t), freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	sig := startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsPort),
		"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-admin", fmt.Sprintf("127.0.0.1:%d", adminPort),
		"-data", t.TempDir(), "-id", "signal-edge")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsPort))
	ed := startProc(t, filepath.Join(bin, "edge"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", edgePort), "-nats", natsURL, "-id", "edge-2")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", edgePort))

	url1 := fmt.Sprintf("ws://127.0.0.1:%d/", wsPort)
	url2 := fmt.Sprintf("ws://127.0.0.1:%d/", edgePort)
	a := dial(t, url1, "alice")
	b := dial(t, url2, "bob")

	taken := dial(t, url2, "")
	_ = taken.SendRaw([]byte(`{"type":"login","name":"alice"}`))
	expect(t, taken, `{"type":"login","success":false,"message":"name is taken"}`)

	_ = a.SendRaw([]byte(`{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0"}}`))
	expect(t, b, `{"type":"offer","offer":{"type":"offer","sdp":"v=0"},"name":"alice"}`)
	_ = b.SendRaw([]byte(`{"type":"answer","name":"alice","answer":{"type":"answer","sdp":"v=0"}}`))
	expect(t, a, `{"type":"answer","answer":{"type":"answer","sdp":"v=0"}}`)
	_ = a.SendRaw([]byte(`{"type":"candidate","name":"bob","candidate":{"candidate":"c1"}}`))
	expect(t, b, `{"type":"candidate","candidate":{"candidate":"c1"}}`)
	_ = b.SendRaw([]byte(`{"type":"candidate","name":"alice","candidate":{"candidate":"c2"}}`))
	expect(t, a, `{"type":"candidate","candidate":{"candidate":"c2"}}`)
	_ = a.SendRaw([]byte(`{"type":"leave","name":"bob"}`))
	expect(t, b, `{"type":"leave"}`)

	// The admin endpoints: ready, and the counters moved.
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if body := httpGet(t, admin+"/readyz"); !strings.HasPrefix(body, "ready") {
		t.Fatalf("/readyz: %q", body)
	}
	metrics := httpGet(t, admin+"/metrics")
	for _, want := range []string{
		`signal_edge_messages_relayed_total{edge="signal-edge",type="offer"} 1`,
		`signal_edge_messages_relayed_total{edge="signal-edge",type="candidate"} 1`,
		`signal_edge_logins_total{edge="signal-edge",result="accepted"} 1`,
		`signal_registry_logins_total{result="taken"} 1`,
		`signal_registry_logins_total{result="accepted"} 2`,
		`signal_nats_connected{service="edge"} 1`,
		`signal_edge_relay_latency_seconds_count{edge="signal-edge"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// The services announce themselves: what "nats micro ls" shows.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	infos := map[string][]micro.Info{}
	sub, _ := nc.SubscribeSync(nats.NewInbox())
	_ = nc.PublishRequest("$SRV.INFO", sub.Subject, nil)
	add := func(m *nats.Msg) {
		var info micro.Info
		_ = json.Unmarshal(m.Data, &info)
		infos[info.Name] = append(infos[info.Name], info)
	}
	// The registry and both edges answer; then no more of them.
	for len(infos["registry"]) < 1 || len(infos["edge"]) < 2 {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("micro services: %+v: %v", infos, err)
		}
		add(m)
	}
	for {
		m, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		add(m)
	}
	if len(infos["registry"]) != 1 || len(infos["edge"]) != 2 {
		t.Fatalf("micro services: %+v", infos)
	}
	ids := []string{infos["edge"][0].Metadata["id"], infos["edge"][1].Metadata["id"]}
	if !(ids[0] == "edge-2" && ids[1] == "signal-edge" || ids[1] == "edge-2" && ids[0] == "signal-edge") {
		t.Fatalf("edge ids %v", ids)
	}

	// SIGTERM the second edge: bob gets 1001, then alice can take the name
	// "bob" at once (released during the drain).
	_ = b.SendRaw([]byte(`{"type":"offer","name":"alice","offer":2}`))
	expect(t, a, `{"type":"offer","offer":2,"name":"bob"}`)
	start := time.Now()
	_ = ed.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ed.Done:
	case <-time.After(20 * time.Second):
		t.Fatal("edge did not exit after SIGTERM")
	}
	t.Logf("edge: SIGTERM to exit in %v", time.Since(start))
	if ed.Err != nil {
		t.Fatalf("edge exit: %v", ed.Err)
	}
	<-b.Done()
	if code, _ := b.CloseStatus(); code != ws.StatusGoingAway {
		t.Fatalf("bob's close code %d, want 1001", code)
	}
	expect(t, a, `{"type":"leave"}`)
	dial(t, url1, "bob")

	_ = sig.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sig.Done:
	case <-time.After(20 * time.Second):
		t.Fatal("signal did not exit after SIGTERM")
	}
	if sig.Err != nil {
		t.Fatalf("signal exit: %v", sig.Err)
	}
	if !strings.Contains(sig.Out.String(), "nats server stopped") {
		t.Fatalf("signal did not stop its NATS server last:\n%s", sig.Out.String())
	}
}
