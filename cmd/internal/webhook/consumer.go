package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
)

// bindTimeout bounds each JetStream API call while binding.
const bindTimeout = 10 * time.Second

// bind ensures the durable consumer and reads its state, trying again
// until it works, ctx ends or the webhook is stopped: the stream may not
// exist yet (the registry creates it), or NATS may not be there yet.
func (w *Webhook) bind(ctx context.Context) (jetstream.Consumer, *jetstream.ConsumerInfo, error) {
	for attempt := 1; ; attempt++ {
		cons, info, err := w.bindOnce(ctx)
		if err == nil {
			return cons, info, nil
		}
		if ctx.Err() != nil || w.stopping() {
			return nil, nil, err
		}
		lvl := "debug"
		if attempt == 1 || attempt%30 == 0 {
			lvl = "warn"
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("%w (the registry creates it)", err)
		}
		if lvl == "warn" {
			w.log.Warn("consumer not bound; retrying", "stream", events.Stream, "attempt", attempt, "err", err)
		} else {
			w.log.Debug("consumer not bound; retrying", "stream", events.Stream, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(backoff(attempt, 250*time.Millisecond, 5*time.Second, 0))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-w.stopc:
			t.Stop()
			return nil, nil, err
		}
	}
}

func (w *Webhook) bindOnce(ctx context.Context) (jetstream.Consumer, *jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, bindTimeout)
	defer cancel()
	cons, err := w.ensureConsumer(ctx)
	if err != nil {
		return nil, nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: consumer %s: %w", w.cfg.Durable, err)
	}
	return cons, info, nil
}

// ensureConsumer creates the durable pull consumer, or updates the fields
// the webhook sets on an existing one (keeping where it starts and what
// an operator set otherwise).
func (w *Webhook) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:     w.cfg.Durable,
		Description: "cmd/webhook: POSTs each event to a URL",
	}
	cur, err := w.js.Consumer(ctx, events.Stream, w.cfg.Durable)
	switch {
	case err == nil:
		cfg = cur.CachedInfo().Config
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		if w.cfg.DeliverNew {
			cfg.DeliverPolicy = jetstream.DeliverNewPolicy
		}
	default:
		return nil, fmt.Errorf("webhook: stream %s: %w", events.Stream, err)
	}
	cfg.AckPolicy = jetstream.AckExplicitPolicy
	cfg.AckWait = w.cfg.AckWait
	cfg.MaxAckPending = w.cfg.MaxAckPending
	cfg.MaxDeliver = -1 // never give up
	cfg.BackOff = nil   // the webhook keeps what it holds alive; redelivery is for a dead one
	cfg.FilterSubject = w.cfg.Filter
	cfg.FilterSubjects = nil
	var c jetstream.Consumer
	if err == nil {
		c, err = w.js.UpdateConsumer(ctx, events.Stream, cfg)
	} else {
		c, err = w.js.CreateConsumer(ctx, events.Stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another instance made it just now
			return w.ensureConsumer(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: consumer %s: %w", w.cfg.Durable, err)
	}
	return c, nil
}
