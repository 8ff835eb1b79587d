package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/cmd/internal/webhook"
	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/natstest"
	"github.com/natsrtc/signal/services/proctest"
)

var binDir string

func TestMain(m *testing.M) {
	var err error
	if binDir, err = os.MkdirTemp("", "webhook-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(binDir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binary builds this command once per test binary.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "webhook")
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// env is the environment without the webhook's variables, so that only
// the flags count.
func env() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIGNAL_") && !strings.HasPrefix(kv, "NATS_") {
			out = append(out, kv)
		}
	}
	return out
}

func TestHelp(t *testing.T) {
	cmd := exec.Command(binary(t), "-h")
	cmd.Env = append(env(), "SIGNAL_WEBHOOK_SECRET=hunter2")
	out, _ := cmd.CombinedOutput()
	if strings.Contains(string(out), "hunter2") {
		t.Errorf("-h shows the secret:\n%s", out)
	}
	for _, want := range []string{
		"-nats", "NATS_URL", "nats://127.0.0.1:4222", "-nats-creds", "NATS_CREDS",
		"-url", "SIGNAL_WEBHOOK_URL", "-secret", "SIGNAL_WEBHOOK_SECRET", "-secret-file", "SIGNAL_WEBHOOK_SECRET_FILE",
		"-durable", `default "webhook"`, "-filter", `default "events.>"`, "-timeout", "default 10s",
		"-min-backoff", "default 500ms", "-max-backoff", "default 1m0s", "-workers", "default 16",
		"-ack-wait", "default 30s", "-max-ack-pending", "default 1024", "-deliver-new",
		"-admin", "SIGNAL_ADMIN", "-log-level", "-gogc", "-shutdown-timeout", "default 15s",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-h does not mention %q:\n%s", want, out)
		}
	}
}

func TestBadFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-secret", "k"}, "-url"},
		{[]string{"-url", "http://127.0.0.1:1/"}, "-secret-file"},
		{[]string{"-url", "http://127.0.0.1:1/", "-secret", "k", "-secret-file", secret}, "give one of them"},
		{[]string{"-url", "http://127.0.0.1:1/", "-secret-file", secret + ".missing"}, "-secret-file"},
		{[]string{"-url", "http://127.0.0.1:1/", "-secret-file", secret, "env:k2"}, "give one of them"},
	} {
		args, e := tt.args, env()
		if last := args[len(args)-1]; strings.HasPrefix(last, "env:") {
			args, e = args[:len(args)-1], append(e, "SIGNAL_WEBHOOK_SECRET="+last[4:])
		}
		cmd := exec.Command(binary(t), args...)
		cmd.Env = e
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("%v: err %v, output %q; want a failure naming %q", tt.args, err, out, tt.want)
		}
	}
}

// hook is a receiver that answers 503 to a third of the POSTs at random
// and records the rest.
type hook struct {
	mu   sync.Mutex
	seqs []uint64 // accepted, in arrival order, duplicates included
	subj map[uint64]string
	bad  int
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	seq, _ := strconv.ParseUint(r.Header.Get(webhook.HeaderEventID), 10, 64)
	h.mu.Lock()
	defer h.mu.Unlock()
	if !webhook.Verify([]byte("s3cret"), body, r.Header.Get(webhook.HeaderSignature)) {
		h.bad++
	}
	if rand.N(3) == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	h.seqs = append(h.seqs, seq)
	h.subj[seq] = r.Header.Get(webhook.HeaderSubject)
	w.WriteHeader(http.StatusOK)
}

func (h *hook) accepted() (distinct int, log []uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subj), append([]uint64(nil), h.seqs...)
}

// TestKill kills the process with SIGKILL mid-stream and starts it again:
// nothing is lost and each user's events arrive in order.
func TestKill(t *testing.T) {
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := events.Ensure(ctx, js, events.StreamConfig(0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	h := &hook{subj: make(map[uint64]string)}
	srv := httptest.NewServer(h)
	defer srv.Close()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bySubj := make(map[string][]uint64) // per user token, ascending
	publish := func(n int) {
		for i := range n {
			name := fmt.Sprintf("u%d", i%7)
			ev := events.Event{Kind: events.KindLogin, Name: name, Edge: "e", Time: time.Now().UTC()}
			if i%2 == 1 {
				ev.Kind, ev.Reason = events.KindLogout, events.ReasonClose
			}
			ack, err := js.PublishMsg(ctx, events.Msg(ev, name, ""))
			if err != nil {
				t.Fatal(err)
			}
			bySubj[name] = append(bySubj[name], ack.Sequence)
		}
	}
	publish(120)

	admin := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	startProc := func() *proctest.Proc {
		return proctest.Start(t, binary(t), "-nats", s.ClientURL(), "-url", srv.URL+"/events", "-secret-file", secret,
			"-ack-wait", "1s", "-min-backoff", "5ms", "-max-backoff", "50ms", "-workers", "4", "-max-ack-pending", "32",
			"-admin", admin, "-log-level", "debug")
	}
	a := startProc()
	waitFor(t, 20*time.Second, "some deliveries", func() bool { n, _ := h.accepted(); return n >= 30 })
	if err := a.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.Done
	publish(30)

	b := startProc()
	cons, err := js.Consumer(ctx, events.Stream, "webhook")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every event delivered", func() bool {
		n, _ := h.accepted()
		if n < 150 {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	// The admin endpoints of the running process.
	for path, want := range map[string]string{"/readyz": "ready", "/metrics": "signal_webhook_delivered_total"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	if err := b.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-b.Done
	if b.Err != nil {
		t.Errorf("after SIGINT: %v", b.Err)
	}

	distinct, log := h.accepted()
	pos := make(map[uint64]int)
	for _, seqs := range bySubj {
		for i, s := range seqs {
			pos[s] = i
		}
	}
	seen := make(map[uint64]bool)
	done := make(map[string]int) // per user: events accepted in order so far
	var dups, ooo int
	for _, s := range log {
		u := h.subj[s][strings.LastIndexByte(h.subj[s], '.')+1:]
		if seen[s] {
			dups++
			continue
		}
		seen[s] = true
		if pos[s] != done[u] {
			ooo++
		}
		done[u]++
	}
	lost := 150 - distinct
	t.Logf("kill -9: events=150 deliveries=%d duplicates=%d lost=%d out_of_order=%d bad_signature=%d", len(log), dups, lost, ooo, h.bad)
	if lost != 0 || ooo != 0 || h.bad != 0 {
		t.Errorf("lost %d, out of order %d, bad signatures %d", lost, ooo, h.bad)
	}
	if !strings.Contains(b.Out.String(), "holding deliveries") {
		t.Errorf("the second process did not wait for the first one's pending events:\n%s", b.Out)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}
