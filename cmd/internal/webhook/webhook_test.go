package webhook

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/services/events"
)

// TestChaos runs one webhook against a receiver that fails in every way in
// turn (5xx, 429, hangs past the timeout, resets, takes an event and then
// drops the connection, is down and comes back on the same port, then
// flakes at random) while events are published: every event arrives, in
// order per user, signed, with duplicates only of the same Signal-Event-Id.
func TestChaos(t *testing.T) {
	b := newBus(t)
	rcv := newReceiver(t, mode5xx)
	wh := start(t, testConfig(b.conn(t), rcv.URL()))
	var pub published
	b.publish(t, &pub, 150, 12)
	st := func() Stats { return wh.w.Stats() }

	waitFor(t, 10*time.Second, "5xx answers", func() bool { return st().RetriedBy["status_5xx"] >= 10 })
	rcv.setMode(mode429)
	waitFor(t, 10*time.Second, "429 answers", func() bool { return st().RetriedBy["status_429"] >= 5 })
	rcv.setMode(modeHang)
	waitFor(t, 10*time.Second, "timeouts", func() bool { return st().RetriedBy["timeout"] >= 4 })
	if n := rcv.maxInFlight(); n < 2 {
		t.Errorf("at most %d POSTs at once with 4 workers and 12 users; want parallel ones", n)
	}
	rcv.setMode(modeReset)
	waitFor(t, 10*time.Second, "resets", func() bool { return st().RetriedBy["reset"] >= 4 })
	rcv.setMode(modeAcceptReset)
	waitFor(t, 10*time.Second, "accepted, then reset", func() bool { return rcv.count(modeAcceptReset) >= 8 })
	rcv.down()
	b.publish(t, &pub, 50, 12) // while the receiver is down
	waitFor(t, 10*time.Second, "refused connections", func() bool { return st().RetriedBy["refused"] >= 4 })
	rcv.setMode(modeFlaky)
	rcv.up()
	b.publish(t, &pub, 50, 12)

	n := pub.count()
	waitFor(t, 30*time.Second, "every event delivered and acked", func() bool {
		s := st()
		return allAccepted(&pub, rcv) && s.Delivered == uint64(n) && s.Pending == 0
	})
	f := check(t, &pub, rcv)
	t.Logf("chaos: %v", f)
	t.Logf("chaos: receiver answers %v; webhook %+v", rcv.modeCounts(), st())
	if f.lost != 0 || f.outOfOrder != 0 || f.badSig != 0 || f.badBody != 0 {
		t.Errorf("want nothing lost, out of order or badly signed: %v", f)
	}
	if f.duplicates == 0 {
		t.Errorf("accept_reset should have caused duplicates: %v", f)
	}
	if s := st(); s.OutOfOrder != 0 {
		t.Errorf("webhook counted %d out of order", s.OutOfOrder)
	}
	if info := b.consumer(t, DefaultDurable); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: %d ack pending, %d pending; want 0", info.NumAckPending, info.NumPending)
	}
	if err := wh.stop(t, 5*time.Second); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestRestart stops the webhook mid-stream and starts another with the same
// durable: gracefully (the stopping one NAKs what it holds, in order), and
// as a crash (its NATS connection and POSTs cut at once, nothing NAKed: the
// new one waits for the redeliveries). Nothing is lost, order per user
// holds across both.
func TestRestart(t *testing.T) {
	for _, tt := range []struct {
		name  string
		crash bool
	}{{"graceful", false}, {"crash", true}} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBus(t)
			rcv := newReceiver(t, modeFlaky)
			var pub published
			b.publish(t, &pub, 150, 10)

			cfgA := testConfig(b.conn(t), rcv.URL())
			if tt.crash {
				cfgA.ShutdownTimeout = time.Millisecond // cancel the POSTs in flight at once
			}
			a := start(t, cfgA)
			waitFor(t, 20*time.Second, "some events delivered", func() bool { return len(rcv.acceptedSet()) >= 40 })
			if tt.crash {
				cfgA.NC.Close()
				if err := <-a.errc; err == nil {
					t.Error("Run after its connection closed: want an error")
				}
				a.done = true
			} else if err := a.stop(t, 5*time.Second); err != nil {
				t.Errorf("Run: %v", err)
			}
			sa := a.w.Stats()
			held := b.consumer(t, DefaultDurable).NumAckPending
			b.publish(t, &pub, 50, 10)

			bw := start(t, testConfig(b.conn(t), rcv.URL()))
			waitFor(t, 30*time.Second, "every event delivered", func() bool {
				if !allAccepted(&pub, rcv) || bw.w.Stats().Pending != 0 {
					return false
				}
				// An ack whose confirmation the crash cut off may have
				// arrived all the same: ask the consumer.
				info := b.consumer(t, DefaultDurable)
				return info.NumAckPending == 0 && info.NumPending == 0
			}, func() string {
				info := b.consumer(t, DefaultDurable)
				return fmt.Sprintf("missing %v; first %+v; second %+v; consumer: ack pending %d, pending %d, redelivered %d, waiting %d, delivered %+v, ack floor %+v",
					missing(&pub, rcv), sa, bw.w.Stats(), info.NumAckPending, info.NumPending, info.NumRedelivered, info.NumWaiting, info.Delivered, info.AckFloor)
			})
			sb := bw.w.Stats()
			f := check(t, &pub, rcv)
			t.Logf("%s: %v; first webhook delivered %d and left %d unacked, second delivered %d (%d redelivered to it) of %d",
				tt.name, f, sa.Delivered, held, sb.Delivered, sb.Redelivered, pub.count())
			if f.lost != 0 || f.outOfOrder != 0 || f.badSig != 0 || f.badBody != 0 {
				t.Errorf("want nothing lost or out of order: %v", f)
			}
			if held > 0 && sb.Redelivered == 0 {
				t.Errorf("%d were pending at the restart, none redelivered", held)
			}
			if info := b.consumer(t, DefaultDurable); info.NumAckPending != 0 || info.NumPending != 0 {
				t.Errorf("consumer: %d ack pending, %d pending; want 0", info.NumAckPending, info.NumPending)
			}
		})
	}
}

// TestSharedDurable runs two webhooks on one durable: they share the work
// and lose nothing. Order per user is not promised then; the figures say
// how often it broke.
func TestSharedDurable(t *testing.T) {
	b := newBus(t)
	rcv := newReceiver(t, modeFlaky)
	var pub published
	b.publish(t, &pub, 200, 10)
	x := start(t, testConfig(b.conn(t), rcv.URL()))
	y := start(t, testConfig(b.conn(t), rcv.URL()))
	n := uint64(pub.count())
	waitFor(t, 30*time.Second, "every event delivered", func() bool {
		return allAccepted(&pub, rcv) && x.w.Stats().Delivered+y.w.Stats().Delivered == n
	})
	f := check(t, &pub, rcv)
	sx, sy := x.w.Stats(), y.w.Stats()
	t.Logf("shared durable: %v; delivered %d + %d; out of order seen by the webhooks: %d + %d", f, sx.Delivered, sy.Delivered, sx.OutOfOrder, sy.OutOfOrder)
	if f.lost != 0 || f.badSig != 0 || f.badBody != 0 {
		t.Errorf("want nothing lost: %v", f)
	}
	if sx.Delivered == 0 || sy.Delivered == 0 {
		t.Errorf("work not shared: %d and %d", sx.Delivered, sy.Delivered)
	}
}

// TestStopDrains: Stop lets a POST in flight finish and acks it; with a
// bound too short it cancels the POST and NAKs the event, which the next
// webhook gets at once.
func TestStopDrains(t *testing.T) {
	b := newBus(t)
	rcv := newReceiver(t, modeSlow)
	var pub published
	b.publish(t, &pub, 1, 1)

	cfg := testConfig(b.conn(t), rcv.URL())
	cfg.Timeout = time.Minute
	a := start(t, cfg)
	waitFor(t, 10*time.Second, "a POST in flight", func() bool { return rcv.inFlight() == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- a.w.Stop(ctx)
	}()
	waitFor(t, 10*time.Second, "stopping", a.w.stopping)
	rcv.releaseSlow()
	if err := <-stopped; err != nil {
		t.Errorf("Stop: %v", err)
	}
	if a.err, a.done = <-a.errc, true; a.err != nil {
		t.Errorf("Run: %v", a.err)
	}
	if s := a.w.Stats(); s.Delivered != 1 || s.Pending != 0 {
		t.Errorf("after a drained stop: %+v; want 1 delivered, 0 pending", s)
	}
	if info := b.consumer(t, DefaultDurable); info.NumAckPending != 0 {
		t.Errorf("%d unacked after a drained stop", info.NumAckPending)
	}

	// Too short a bound: cancelled and NAKed.
	b.publish(t, &pub, 1, 1)
	c := start(t, cfg)
	waitFor(t, 10*time.Second, "a POST in flight", func() bool { return rcv.inFlight() == 1 })
	t0 := time.Now()
	if err := c.stop(t, 100*time.Millisecond); err != nil {
		t.Errorf("Run: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("stop took %v with a 100ms bound", d)
	}
	if s := c.w.Stats(); s.Delivered != 0 || s.Pending != 1 || s.RetriedBy["canceled"] != 1 {
		t.Errorf("after a cut stop: %+v; want 0 delivered, 1 pending, 1 canceled", s)
	}
	rcv.setMode(modeOK)
	d := start(t, cfg)
	waitFor(t, 5*time.Second, "the NAKed event delivered", func() bool { return d.w.Stats().Delivered == 1 })
	if s := d.w.Stats(); s.Redelivered != 1 {
		t.Errorf("%+v: want the event redelivered", s)
	}
	if f := check(t, &pub, rcv); f.lost != 0 || f.outOfOrder != 0 {
		t.Errorf("%v", f)
	}
}

// TestStreamLater: a webhook started before the stream exists waits for
// it; the end of Run's ctx stops it.
func TestStreamLater(t *testing.T) {
	b := newBus(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.js.DeleteStream(ctx, "SIGNAL_EVENTS"); err != nil {
		t.Fatal(err)
	}
	rcv := newReceiver(t, modeOK)
	w, err := New(testConfig(b.conn(t), rcv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	if w.Ready() == nil {
		t.Error("ready without a stream")
	}
	if _, err := events.Ensure(ctx, b.js, events.StreamConfig(0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	var pub published
	b.publish(t, &pub, 3, 1)
	waitFor(t, 10*time.Second, "delivered", func() bool { return w.Stats().Delivered == 3 })
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after its ctx ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
}

// TestMetrics: the collectors register and report under signal_webhook_.
func TestMetrics(t *testing.T) {
	b := newBus(t)
	rcv := newReceiver(t, modeOK)
	wh := start(t, testConfig(b.conn(t), rcv.URL()))
	reg := prometheus.NewRegistry()
	reg.MustRegister(wh.w.Collectors()...)
	var pub published
	b.publish(t, &pub, 5, 2)
	waitFor(t, 10*time.Second, "delivered", func() bool { return wh.w.Stats().Delivered == 5 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			got[mf.GetName()] += v
		}
	}
	for name, want := range map[string]float64{
		"signal_webhook_delivered_total": 5, "signal_webhook_attempts_total": 5, "signal_webhook_retried_total": 0,
		"signal_webhook_pending": 0, "signal_webhook_in_flight": 0, "signal_webhook_delivery_seconds": 5,
		"signal_webhook_post_seconds": 5, "signal_webhook_redelivered_total": 0, "signal_webhook_out_of_order_total": 0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	for name := range got {
		if !strings.HasPrefix(name, "signal_webhook_") {
			t.Errorf("unexpected metric %s", name)
		}
	}
}

// TestLeastPrivilege runs the webhook as a NATS user allowed only what the
// README lists.
func TestLeastPrivilege(t *testing.T) {
	perms := &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.CONSUMER.INFO.SIGNAL_EVENTS.webhook",
			"$JS.API.CONSUMER.CREATE.SIGNAL_EVENTS.webhook.>",
			"$JS.API.CONSUMER.MSG.NEXT.SIGNAL_EVENTS.webhook",
			"$JS.ACK.SIGNAL_EVENTS.webhook.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "webhook", Password: "w", Permissions: perms},
			{Username: "app", Password: "a"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	connect := func(user, pass string) *nats.Conn {
		var errs atomic.Int64
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, pass),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				errs.Add(1)
				t.Logf("%s: %v", user, err)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		t.Cleanup(func() {
			if n := errs.Load(); n > 0 {
				t.Errorf("%s: %d asynchronous errors (permission violations?)", user, n)
			}
		})
		return nc
	}
	app := connect("app", "a")
	js, err := jetstream.New(app)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := events.Ensure(ctx, js, events.StreamConfig(0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	b := &bus{s: s, nc: app, js: js}
	rcv := newReceiver(t, modeOK)
	wh := start(t, testConfig(connect("webhook", "w"), rcv.URL()))
	var pub published
	b.publish(t, &pub, 10, 3)
	waitFor(t, 10*time.Second, "delivered", func() bool { return wh.w.Stats().Delivered == 10 })
	if err := wh.stop(t, 5*time.Second); err != nil {
		t.Error(err)
	}
}
