package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/names"
	"github.com/natsrtc/signal/services/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testSecret = []byte("test secret: not for production")

// testLogger logs to stderr when SIGNAL_TEST_LOGS is set.
func testLogger() *slog.Logger {
	if os.Getenv("SIGNAL_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// bus is an embedded NATS server with the events stream.
type bus struct {
	s  *server.Server
	nc *nats.Conn // the publisher's
	js jetstream.JetStream
}

func newBus(t testing.TB) *bus {
	t.Helper()
	s := natstest.Server(t)
	nc := natstest.Conn(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := events.Ensure(ctx, js, events.StreamConfig(0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	return &bus{s: s, nc: nc, js: js}
}

// conn is a further connection to the bus, for one webhook.
func (b *bus) conn(t testing.TB) *nats.Conn { return natstest.Conn(t, b.s) }

// consumer returns the durable's state.
func (b *bus) consumer(t testing.TB, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.js.Consumer(ctx, events.Stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// published is what the test published: the truth the receiver is checked
// against.
type published struct {
	mu    sync.Mutex
	msgs  map[uint64]pubMsg
	byKey map[string][]uint64 // ascending
}

type pubMsg struct {
	subject string
	data    []byte
}

func (p *published) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.msgs)
}

var kinds = []string{events.KindLogin, events.KindLogout, events.KindJoin, events.KindPart, events.KindCallStart, events.KindCallEnd}

// publish publishes n events of random kinds for users user0..user<users-1>
// (a few with names that need encoding), through JetStream.
func (b *bus) publish(t testing.TB, p *published, n, users int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs, p.byKey = make(map[uint64]pubMsg), make(map[string][]uint64)
	}
	for range n {
		u := rand.N(users)
		name := fmt.Sprintf("user%d", u)
		if u%4 == 3 {
			name = fmt.Sprintf("ünïcode %d.>", u) // a token that is encoded
		}
		ev := events.Event{Kind: kinds[rand.N(len(kinds))], Name: name, Edge: "edge-1", Time: time.Now().UTC(), Session: "s1"}
		switch ev.Kind {
		case events.KindLogout:
			ev.Reason = events.ReasonClose
		case events.KindJoin, events.KindPart:
			ev.Room = "room-1"
		case events.KindCallStart, events.KindCallEnd:
			ev.Peer = "peer"
		}
		m := events.Msg(ev, names.Token(name), "")
		ack, err := b.js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		p.msgs[ack.Sequence] = pubMsg{subject: m.Subject, data: m.Data}
		k := orderKey(m.Subject)
		p.byKey[k] = append(p.byKey[k], ack.Sequence)
	}
}

// testConfig is a webhook configuration with short times.
func testConfig(nc *nats.Conn, url string) Config {
	return Config{
		NC:              nc,
		URL:             url,
		Secret:          testSecret,
		Timeout:         300 * time.Millisecond,
		MinBackoff:      5 * time.Millisecond,
		MaxBackoff:      80 * time.Millisecond,
		Workers:         4,
		AckWait:         time.Second,
		MaxAckPending:   64,
		ShutdownTimeout: 2 * time.Second,
		Logger:          testLogger(),
	}
}

// running is a webhook whose Run runs on its own goroutine.
type running struct {
	w    *Webhook
	errc chan error
	err  error
	done bool
}

func start(t testing.TB, cfg Config) *running {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{w: w, errc: make(chan error, 1)}
	go func() { r.errc <- w.Run(context.Background()) }()
	waitFor(t, 10*time.Second, "webhook bound", func() bool { return w.Ready() == nil })
	t.Cleanup(func() { r.stop(t, 5*time.Second) })
	return r
}

// stop stops it within bound and returns Run's error.
func (r *running) stop(t testing.TB, bound time.Duration) error {
	t.Helper()
	if r.done {
		return r.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := r.w.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case r.err = <-r.errc:
	case <-time.After(bound + 2*time.Second):
		t.Fatal("Run did not return after Stop")
	}
	r.done = true
	return r.err
}

// waitFor polls cond until it holds, or fails t after d; explain, if
// given, says what the state was then.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, e := range explain {
				t.Log(e())
			}
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
}

// figures are what a run delivered, checked against what was published.
type figures struct {
	events     int // published
	requests   int // POSTs the receiver got
	deliveries int // of them answered (or taken as) accepted
	duplicates int // accepted deliveries beyond the first of an event
	lost       int // events never accepted
	outOfOrder int // POSTs of an event before an earlier one of its user was accepted
	badSig     int
	badBody    int
}

func (f figures) String() string {
	return fmt.Sprintf("events=%d requests=%d deliveries=%d duplicates=%d lost=%d out_of_order=%d bad_signature=%d bad_body=%d",
		f.events, f.requests, f.deliveries, f.duplicates, f.lost, f.outOfOrder, f.badSig, f.badBody)
}

// check compares the receiver's log with what was published.
func check(t testing.TB, p *published, rcv *receiver) figures {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	log := rcv.requests()
	f := figures{events: len(p.msgs), requests: len(log)}
	accepted := make(map[uint64]int)
	prefix := make(map[string]int) // per key: how many of its first events have been accepted
	index := make(map[uint64]int)  // seq -> its index among its key's events
	for _, seqs := range p.byKey {
		for i, s := range seqs {
			index[s] = i
		}
	}
	var reported int
	for _, r := range log {
		if !r.sigOK {
			f.badSig++
		}
		pm, ok := p.msgs[r.seq]
		if !ok || pm.subject != r.subject || string(pm.data) != string(r.body) {
			f.badBody++
			continue
		}
		k := orderKey(r.subject)
		if prefix[k] < index[r.seq] {
			f.outOfOrder++
			if reported < 5 {
				reported++
				t.Logf("out of order: seq %d (%s) POSTed before seq %d was accepted", r.seq, r.subject, p.byKey[k][prefix[k]])
			}
		}
		if !r.accepted {
			continue
		}
		f.deliveries++
		if accepted[r.seq]++; accepted[r.seq] > 1 {
			f.duplicates++
		}
		seqs := p.byKey[k]
		for prefix[k] < len(seqs) && accepted[seqs[prefix[k]]] > 0 {
			prefix[k]++
		}
	}
	for s := range p.msgs {
		if accepted[s] == 0 {
			f.lost++
		}
	}
	return f
}

// missing lists the published events never accepted.
func missing(p *published, rcv *receiver) []uint64 {
	acc := rcv.acceptedSet()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint64
	for s := range p.msgs {
		if acc[s] == 0 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// allAccepted reports whether every published event was accepted.
func allAccepted(p *published, rcv *receiver) bool {
	p.mu.Lock()
	seqs := make([]uint64, 0, len(p.msgs))
	for s := range p.msgs {
		seqs = append(seqs, s)
	}
	p.mu.Unlock()
	acc := rcv.acceptedSet()
	return !slices.ContainsFunc(seqs, func(s uint64) bool { return acc[s] == 0 })
}
