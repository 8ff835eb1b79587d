// Package webhook consumes the SIGNAL_EVENTS stream ([events.Stream]) with a
// durable JetStream pull consumer and POSTs each event to one URL, signed,
// retrying until the receiver answers 2xx: at least once, and in order per
// user. cmd/webhook is its command.
//
// # A POST
//
// The body is the event's JSON exactly as stored in the stream. The headers:
//
//	Content-Type: application/json
//	Signal-Signature: sha256=<hex HMAC-SHA256(secret, body)>
//	Signal-Event-Id: <stream sequence>         (the same on every retry and redelivery)
//	Signal-Event-Subject: <subject>            (events.<kind>.<name token>)
//	Signal-Delivery-Attempt: <n>               (1, 2, ... within this process; advisory)
//
// Only a 2xx counts as delivered. Everything else is retried, forever, with
// a capped exponential backoff with jitter (MinBackoff doubling up to
// MaxBackoff; a Retry-After header lengthens the wait up to MaxBackoff):
// 5xx, 429 and 408, other 4xx too (a receiver that rejects an event for good
// still has to answer 2xx to move on: a 400 from a receiver with a bug, a
// 401 from a rotated secret or a 404 from a wrong path would otherwise lose
// events for good), 3xx (redirects are not followed), timeouts (Timeout per
// POST), refused and reset connections. The message is acked only after a
// 2xx, and the ack is confirmed by the server (a double ack) before the
// user's next event is POSTed.
//
// # Order
//
// Events of one user, that is of one name token (the last token of
// events.<kind>.<token>, so login, logout, join, part and calls of one user
// together; any other subject orders by itself), reach the receiver in
// stream order: the next is POSTed only once the previous one got its 2xx
// and its ack. Events of different users are POSTed in parallel by Workers
// goroutines. In order per user implies in order per subject.
//
// JetStream hands out a consumer's messages in stream order. What can reorder
// them is redelivery: a message whose ack wait (AckWait) runs out is
// delivered again, and messages run out one by one, each on its own clock.
// So:
//
//   - The webhook keeps every message it has received (MaxAckPending at
//     most: the server delivers no more while that many are unacked), and
//     marks all of them in progress every AckWait/3, in stream order: none
//     times out while the process lives, however long the receiver is down
//     (a redelivery to this same process, after a NATS outage longer than
//     AckWait, is recognised by its sequence and merged).
//   - A stopping webhook finishes the POSTs in flight (within the shutdown
//     timeout, then cancels them) and NAKs every message it still holds, in
//     stream order; the server's redelivery queue is first in, first out, so
//     the next consumer gets them in stream order, at once.
//   - A starting webhook first reads the consumer's state. If messages are
//     still pending from a predecessor (killed with -9, or one whose NAKs
//     did not arrive), it receives and holds, but POSTs nothing, until as
//     many messages at or below the consumer's last delivered sequence have
//     been redelivered to it, or AckWait plus a margin has passed (by then
//     every message of a dead predecessor has timed out); then it starts, in
//     stream order. A restart after a crash costs up to AckWait of delay and
//     no order. A message that arrives below one of its user's messages
//     already in flight is POSTed after it all the same, and counted
//     (signal_webhook_out_of_order_total).
//
// MaxAckPending bounds the work held: a user with that many events waiting
// stalls the others (head of line); raise it for receivers that are often
// slow for one user. An event that the stream drops (MaxAge, MaxBytes)
// before it was delivered is lost to the webhook too.
//
// # Several instances
//
// Instances with the same Durable share the work: JetStream hands each
// message to one of them. At least once holds. Order per user does not: two
// instances can each hold an event of one user and POST them at once, and a
// starting instance waits for a running one's pending messages in vain (its
// start costs AckWait). Where order matters, run one instance per durable
// (a supervisor that restarts it costs at most AckWait), or split the
// events between instances by Filter, each with its own durable, so that
// every user's events go through one of them (by kind does not do that; a
// receiver then has order per subject only).
package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
)

// Defaults for Config fields left zero.
const (
	DefaultDurable         = "webhook"
	DefaultFilter          = events.All
	DefaultTimeout         = 10 * time.Second
	DefaultMinBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff      = time.Minute
	DefaultWorkers         = 16
	DefaultAckWait         = 30 * time.Second
	DefaultMaxAckPending   = 1024
	DefaultShutdownTimeout = 15 * time.Second
)

// Config of a Webhook. Zero values select the defaults beside them.
type Config struct {
	// NC is the NATS connection. Required.
	NC *nats.Conn
	// URL receives the POSTs: http or https. Required.
	URL string
	// Secret keys the HMAC-SHA256 signature. Required.
	Secret []byte
	// Durable names the JetStream consumer; instances with one name share
	// the work (see the package doc on order). Zero: DefaultDurable.
	Durable string
	// Filter selects the events, a subject filter within events.>. Zero:
	// DefaultFilter, every event.
	Filter string
	// DeliverNew makes a consumer that does not exist yet start with the
	// events published from now on. Zero: it starts with the oldest event
	// the stream retains. An existing consumer goes on where it is.
	DeliverNew bool
	// Timeout bounds each POST, from dialing to the response's end. Zero:
	// DefaultTimeout.
	Timeout time.Duration
	// MinBackoff is the wait after a first failed attempt; it doubles with
	// every further one up to MaxBackoff, and each wait is drawn between
	// half and all of it (jitter). Zero: DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Workers is how many POSTs run at once (for different users). Zero:
	// DefaultWorkers.
	Workers int
	// AckWait is the consumer's ack wait: how long the server waits for an
	// ack, or an in-progress mark, before redelivering; and so how long a
	// start after a crash waits for the predecessor's messages. Zero:
	// DefaultAckWait.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet acked, held by
	// all instances together. Zero: DefaultMaxAckPending.
	MaxAckPending int
	// ShutdownTimeout bounds the stop when Run's ctx ends: POSTs in flight
	// get this long to finish. Zero: DefaultShutdownTimeout. (Stop takes
	// its own ctx instead.)
	ShutdownTimeout time.Duration
	// Client sends the POSTs; it should not follow redirects. Zero: a client
	// of its own that does not, with keep-alive connections for Workers.
	Client *http.Client
	// Logger; zero: slog.Default().
	Logger *slog.Logger
}

// Webhook delivers events; New makes one, Run runs it once.
type Webhook struct {
	cfg    Config
	log    *slog.Logger
	url    string // redacted, for logs
	client *http.Client
	ownTr  *http.Transport // closed when Run returns, if the client is ours
	js     jetstream.JetStream
	stats  *stats

	ready    atomic.Bool
	warned   atomic.Bool  // a failure was logged at warn since the last 2xx
	lastWarn atomic.Int64 // unix nanos of the last failure logged at warn

	started  atomic.Bool
	stopOnce sync.Once
	stopc    chan struct{} // closed by Stop, or when Run's ctx ends: no new attempts
	stopMu   sync.Mutex
	stopCtx  context.Context    // the stop's bound, set before stopc closes
	hard     context.Context    // POSTs and acks in flight run under it
	hardStop context.CancelFunc // cancels them: the stop's bound has passed
	done     chan struct{}      // closed when Run returns
}

// ErrAlreadyRun is returned by Run when it is called a second time.
var ErrAlreadyRun = errors.New("webhook: already run")

// New checks cfg and fills in its defaults. It touches nothing yet: Run
// binds the consumer.
func New(cfg Config) (*Webhook, error) {
	if cfg.NC == nil {
		return nil, errors.New("webhook: no NATS connection")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("webhook: url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: url %q: want http:// or https:// and a host", u.Redacted())
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("webhook: no secret")
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	if cfg.Filter == "" {
		cfg.Filter = DefaultFilter
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = DefaultMaxAckPending
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	switch {
	case cfg.Timeout < 0, cfg.MinBackoff < 0, cfg.MaxBackoff < cfg.MinBackoff:
		return nil, fmt.Errorf("webhook: want 0 < timeout and 0 < min backoff <= max backoff (%v, %v, %v)", cfg.Timeout, cfg.MinBackoff, cfg.MaxBackoff)
	case cfg.Workers < 0, cfg.MaxAckPending < 0:
		return nil, fmt.Errorf("webhook: want workers and max ack pending > 0 (%d, %d)", cfg.Workers, cfg.MaxAckPending)
	case cfg.AckWait < 100*time.Millisecond:
		return nil, fmt.Errorf("webhook: ack wait %v is too short", cfg.AckWait)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	js, err := jetstream.New(cfg.NC)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	w := &Webhook{
		cfg:   cfg,
		log:   log.With("svc", "webhook", "durable", cfg.Durable),
		url:   u.Redacted(),
		js:    js,
		stats: newStats(),
		stopc: make(chan struct{}),
		done:  make(chan struct{}),
	}
	w.hard, w.hardStop = context.WithCancel(context.Background())
	w.client = cfg.Client
	if w.client == nil {
		w.ownTr = http.DefaultTransport.(*http.Transport).Clone()
		w.ownTr.MaxIdleConnsPerHost = cfg.Workers
		w.client = &http.Client{
			Transport:     w.ownTr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return w, nil
}

// Ready is a readiness check: nil once the consumer is bound and messages
// flow to the webhook (whatever the receiver answers).
func (w *Webhook) Ready() error {
	if !w.ready.Load() {
		return fmt.Errorf("webhook: consumer %s on stream %s not bound yet", w.cfg.Durable, events.Stream)
	}
	return nil
}

// Run binds the durable consumer (creating it, or updating its ack wait,
// max ack pending and filter; it waits, retrying, for the stream to exist)
// and delivers events until ctx ends or Stop is called. Then it stops: the
// POSTs in flight get ShutdownTimeout (or Stop's ctx) to finish, and the
// messages still held are NAKed in stream order. It returns once every
// goroutine it started has ended: nil after a stop, the error that ended
// it otherwise (the consumer deleted under it, the NATS connection closed),
// ErrAlreadyRun when called again.
func (w *Webhook) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer close(w.done)
	defer w.hardStop()
	if w.stopping() {
		return nil
	}
	if w.ownTr != nil {
		defer w.ownTr.CloseIdleConnections()
	}
	// ctx's end is a stop bounded by ShutdownTimeout.
	runCtx, cancel := context.WithCancel(ctx)
	var watch sync.WaitGroup
	scancel := context.CancelFunc(func() {})
	watch.Go(func() {
		select {
		case <-runCtx.Done():
			if ctx.Err() != nil {
				var sctx context.Context
				sctx, scancel = context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
				w.beginStop(sctx)
			}
		case <-w.stopc:
		}
	})
	defer func() {
		cancel()
		watch.Wait()
		scancel()
	}()

	cons, info, err := w.bind(runCtx)
	if err != nil {
		if w.stopping() || ctx.Err() != nil {
			return nil
		}
		return err
	}
	return w.dispatch(cons, info)
}

// Stop stops a running webhook: no new POSTs; those in flight may finish
// (and their acks be confirmed) until ctx ends, then they are cancelled.
// It waits for Run to return, or for ctx, and returns ctx's error if ctx
// ended first. A ctx without a deadline lets a stop wait as long as NATS
// is away. Stop before Run makes Run return at once.
func (w *Webhook) Stop(ctx context.Context) error {
	w.beginStop(ctx)
	if !w.started.Load() {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.hardStop()
		select {
		case <-w.done:
			return nil
		case <-time.After(time.Second):
			return ctx.Err()
		}
	}
}

// beginStop closes stopc once, with ctx as the drain's bound.
func (w *Webhook) beginStop(ctx context.Context) {
	w.stopOnce.Do(func() {
		w.stopMu.Lock()
		w.stopCtx = ctx
		w.stopMu.Unlock()
		close(w.stopc)
	})
}

func (w *Webhook) stopping() bool {
	select {
	case <-w.stopc:
		return true
	default:
		return false
	}
}

// drainCtx is the stop's bound, once stopping.
func (w *Webhook) drainCtx() context.Context {
	w.stopMu.Lock()
	defer w.stopMu.Unlock()
	return w.stopCtx
}
