package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/events"
)

func TestSign(t *testing.T) {
	// echo -n '{"kind":"login"}' | openssl dgst -sha256 -hmac 'secret'
	const want = "sha256=2555013b12f5803607430113493bc2a675954c92f15d985a209f5ff4723ee573"
	got := Sign([]byte("secret"), []byte(`{"kind":"login"}`))
	if !Verify([]byte("secret"), []byte(`{"kind":"login"}`), got) {
		t.Fatal("Verify rejects Sign")
	}
	if Verify([]byte("secret"), []byte(`{"kind":"logout"}`), got) || Verify([]byte("other"), []byte(`{"kind":"login"}`), got) {
		t.Fatal("Verify accepts another body or key")
	}
	if got != want {
		t.Errorf("Sign = %s, want %s (openssl)", got, want)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for _, tt := range []struct {
		attempt  int
		asked    time.Duration
		min, max time.Duration
	}{
		{1, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 0, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 0, 800 * time.Millisecond, 1600 * time.Millisecond},
		{6, 0, time.Second, 2 * time.Second},  // capped
		{64, 0, time.Second, 2 * time.Second}, // no overflow
		{1000, 0, time.Second, 2 * time.Second},
		{1, 1500 * time.Millisecond, 1500 * time.Millisecond, 1500 * time.Millisecond}, // Retry-After
		{1, time.Hour, 2 * time.Second, 2 * time.Second},                               // capped
	} {
		t.Run(fmt.Sprint(tt.attempt, "/", tt.asked), func(t *testing.T) {
			lower := tt.min
			for range 200 {
				d := backoff(tt.attempt, lo, hi, tt.asked)
				if d < lower || d > tt.max {
					t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tt.attempt, d, lower, tt.max)
				}
			}
		})
	}
}

func TestOrderKey(t *testing.T) {
	for _, tt := range []struct{ subject, key string }{
		{events.Subject(events.KindLogin, "alice"), "alice"},
		{events.Subject(events.KindLogout, "alice"), "alice"},
		{events.Subject(events.KindCallStart, "=w7w"), "=w7w"},
		{"events.login", "events.login"},
		{"events.login.", "events.login."},
		{"other.thing", "other.thing"},
	} {
		if got := orderKey(tt.subject); got != tt.key {
			t.Errorf("orderKey(%q) = %q, want %q", tt.subject, got, tt.key)
		}
	}
}

func TestClassify(t *testing.T) {
	timedOut, cancel := context.WithDeadline(context.Background(), time.Now())
	defer cancel()
	bg := context.Background()
	for _, tt := range []struct {
		ctx  context.Context
		err  error
		want reason
	}{
		{timedOut, context.DeadlineExceeded, reasonTimeout},
		{bg, context.Canceled, reasonCanceled},
		{bg, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, reasonRefused},
		{bg, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, reasonReset},
		{bg, io.EOF, reasonReset},
		{bg, &net.DNSError{Err: "no such host"}, reasonDNS},
		{bg, errors.New("something"), reasonOther},
	} {
		if got := classify(tt.ctx, tt.err); got != tt.want {
			t.Errorf("classify(%v) = %s, want %s", tt.err, reasonNames[got], reasonNames[tt.want])
		}
	}
}

func TestRetryAfter(t *testing.T) {
	if d := retryAfter("3"); d != 3*time.Second {
		t.Errorf("3: %v", d)
	}
	for _, v := range []string{"", "-1", "soon"} {
		if d := retryAfter(v); d != 0 {
			t.Errorf("%q: %v", v, d)
		}
	}
	if d := retryAfter(time.Now().Add(time.Minute).UTC().Format(http1123)); d < 50*time.Second || d > time.Minute {
		t.Errorf("date: %v", d)
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestNewValidates(t *testing.T) {
	b := newBus(t)
	nc := b.conn(t)
	ok := testConfig(nc, "http://127.0.0.1:1/x")
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no conn", func(c *Config) { c.NC = nil }},
		{"no url", func(c *Config) { c.URL = "" }},
		{"ftp", func(c *Config) { c.URL = "ftp://x/y" }},
		{"no secret", func(c *Config) { c.Secret = nil }},
		{"backoff", func(c *Config) { c.MaxBackoff = c.MinBackoff / 2 }},
		{"workers", func(c *Config) { c.Workers = -1 }},
		{"ack wait", func(c *Config) { c.AckWait = time.Millisecond }},
	} {
		cfg := ok
		tt.mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", tt.name)
		}
	}
	w, err := New(Config{NC: nc, URL: "https://example.com/hook", Secret: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	c := w.cfg
	if c.Durable != DefaultDurable || c.Filter != events.All || c.Timeout != DefaultTimeout || c.Workers != DefaultWorkers ||
		c.MinBackoff != DefaultMinBackoff || c.MaxBackoff != DefaultMaxBackoff || c.AckWait != DefaultAckWait ||
		c.MaxAckPending != DefaultMaxAckPending || c.ShutdownTimeout != DefaultShutdownTimeout {
		t.Errorf("defaults not applied: %+v", c)
	}
	// Stop before Run: Run returns at once.
	if err := w.Stop(context.Background()); err != nil {
		t.Error(err)
	}
	if err := w.Run(context.Background()); err != nil {
		t.Error(err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run: %v", err)
	}
}
