package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
)

// entry is one message the webhook holds: received, not yet acked.
// Everything but msg is set before the entry is shared and never changes.
type entry struct {
	seq     uint64 // stream sequence: Signal-Event-Id
	key     string // ordering key: the user's name token
	subject string
	data    []byte
	stored  time.Time     // when the stream stored it
	msg     jetstream.Msg // the latest delivery; owned by the dispatcher
}

// lane is the queue of one ordering key: at most one entry in flight, the
// others waiting in stream order.
type lane struct {
	busy  *entry   // being POSTed, or nil
	queue []*entry // waiting, ascending sequence
	ready bool     // on the dispatcher's ready list
}

// job hands an entry to a worker with the delivery to ack it through.
type job struct {
	e   *entry
	msg jetstream.Msg
}

// result comes back from a worker: acked, or given up because stopping.
type result struct {
	e     *entry
	acked bool
}

// orderKey is what events are ordered by: the name token of
// events.<kind>.<token>, so that one user's events of every kind stay in
// order; any other subject is its own key.
func orderKey(subject string) string {
	if rest, ok := strings.CutPrefix(subject, events.SubjectPrefix); ok {
		if i := strings.IndexByte(rest, '.'); i >= 0 && i+1 < len(rest) {
			return rest[i+1:]
		}
	}
	return subject
}

// dispatcher owns the held messages; it runs on Run's goroutine.
type dispatcher struct {
	w       *Webhook
	held    map[uint64]*entry
	lanes   map[string]*lane
	readyQ  []*lane // lanes with a waiting entry and none in flight, oldest first
	jobs    chan job
	seqs    []uint64 // scratch for progress and the NAKs
	holding bool     // waiting for a predecessor's pending messages
	oldLast uint64   // the consumer's last delivered stream sequence at start
	oldLeft int      // of its pending messages, how many are still to come
	started time.Time
}

// pullBatch is how many messages a pull asks for: the consumer's
// MaxAckPending bounds what is delivered anyway.
func (w *Webhook) pullBatch() int { return min(w.cfg.MaxAckPending, 256) }

// progressEvery is how often held messages are marked in progress: three
// marks per ack wait, so that two may be lost.
func (w *Webhook) progressEvery() time.Duration { return w.cfg.AckWait / 3 }

// holdFor bounds the wait for a predecessor's messages: each of them times
// out within AckWait of its last in-progress mark, which was before this
// start.
func (w *Webhook) holdFor() time.Duration { return w.cfg.AckWait + max(w.cfg.AckWait/4, time.Second) }

// dispatch runs the fetcher and the workers, hands messages to workers in
// order per lane, and stops them all. info is the consumer's state at
// start.
func (w *Webhook) dispatch(cons jetstream.Consumer, info *jetstream.ConsumerInfo) error {
	it, err := cons.Messages(
		jetstream.PullMaxMessages(w.pullBatch()),
		jetstream.WithMessagesErrOnMissingHeartbeat(false),
	)
	if err != nil {
		return fmt.Errorf("webhook: consume %s: %w", w.cfg.Durable, err)
	}
	d := &dispatcher{
		w:       w,
		held:    make(map[uint64]*entry),
		lanes:   make(map[string]*lane),
		jobs:    make(chan job),
		started: time.Now(),
	}
	in := make(chan jetstream.Msg)
	fetchErr := make(chan error, 1)
	results := make(chan result, w.cfg.Workers) // one each: a worker never waits to report
	var wg sync.WaitGroup
	wg.Go(func() { fetchErr <- w.fetch(it, in) })
	for range w.cfg.Workers {
		wg.Go(func() {
			for j := range d.jobs {
				results <- result{e: j.e, acked: w.deliver(j)}
			}
		})
	}

	var hold <-chan time.Time
	if info.NumAckPending > 0 {
		d.holding, d.oldLast, d.oldLeft = true, info.Delivered.Stream, info.NumAckPending
		t := time.NewTimer(w.holdFor())
		defer t.Stop()
		hold = t.C
		w.log.Info("holding deliveries until the previous consumer's pending messages are redelivered",
			"pending", info.NumAckPending, "last_delivered", info.Delivered.Stream, "at_most", w.holdFor().String())
	}
	tick := time.NewTicker(w.progressEvery())
	defer tick.Stop()
	w.ready.Store(true)
	w.log.Info("webhook consuming", "stream", events.Stream, "filter", w.cfg.Filter, "url", w.url,
		"workers", w.cfg.Workers, "ack_wait", w.cfg.AckWait.String(), "max_ack_pending", w.cfg.MaxAckPending)

	var runErr error
loop:
	for {
		var jobc chan<- job
		var next job
		if !d.holding && len(d.readyQ) > 0 {
			jobc, next = d.jobs, d.peek()
		}
		select {
		case m, ok := <-in:
			if !ok {
				in = nil
				if runErr = <-fetchErr; runErr != nil {
					w.log.Error("consumer ended; stopping", "err", runErr)
				}
				break loop
			}
			d.add(m)
		case jobc <- next:
			d.pop()
		case r := <-results:
			d.finish(r)
		case <-tick.C:
			d.progress()
		case <-hold:
			d.release("timed out")
		case <-w.stopc:
			break loop
		}
	}
	w.ready.Store(false)

	// Stop: nothing new is dispatched; the messages still buffered come
	// through and are held; the POSTs in flight finish, or are cancelled
	// when the stop's bound passes.
	if !w.stopping() {
		sctx, scancel := context.WithTimeout(context.Background(), w.cfg.ShutdownTimeout)
		defer scancel()
		w.beginStop(sctx)
	}
	if in != nil {
		it.Drain()
	}
	bound := w.drainCtx().Done()
	for in != nil || d.inflight() > 0 {
		select {
		case m, ok := <-in:
			if !ok {
				in = nil
				if err := <-fetchErr; err != nil && runErr == nil && !errors.Is(err, jetstream.ErrConnectionClosed) {
					runErr = err
				}
				continue
			}
			d.add(m)
		case r := <-results:
			d.finish(r)
		case <-tick.C:
			d.progress()
		case <-bound:
			bound = nil
			w.log.Warn("shutdown timeout: cancelling the POSTs in flight", "in_flight", d.inflight())
			w.hardStop()
			it.Stop()
		}
	}
	close(d.jobs)
	wg.Wait()
	d.nakAll()
	return runErr
}

// fetch hands every message of it to in, and closes in when it ends: nil
// when stopped, else the error that ended it.
func (w *Webhook) fetch(it jetstream.MessagesContext, in chan<- jetstream.Msg) error {
	defer close(in)
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) && !errors.Is(err, jetstream.ErrConnectionClosed) && w.stopping() {
				return nil
			}
			return fmt.Errorf("webhook: consumer %s: %w", w.cfg.Durable, err)
		}
		in <- m // the dispatcher reads until in is closed
	}
}

func (d *dispatcher) inflight() int { return int(d.w.stats.inflight.Load()) }

// add holds a message that arrived.
func (d *dispatcher) add(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		d.w.log.Warn("not a JetStream message; dropped", "subject", m.Subject(), "err", err)
		return
	}
	seq := md.Sequence.Stream
	if md.NumDelivered > 1 {
		d.w.stats.redelivered.Add(1)
	}
	if e, ok := d.held[seq]; ok {
		// Redelivered to us while we hold it (an outage longer than the
		// ack wait): the same event; acks by sequence work through either.
		e.msg = m
		return
	}
	if d.holding && seq <= d.oldLast {
		d.oldLeft--
	}
	e := &entry{seq: seq, key: orderKey(m.Subject()), subject: m.Subject(), data: m.Data(), stored: md.Timestamp, msg: m}
	d.held[seq] = e
	d.w.stats.pending.Add(1)
	l := d.lanes[e.key]
	if l == nil {
		l = &lane{}
		d.lanes[e.key] = l
	}
	if l.busy != nil && seq < l.busy.seq {
		d.w.stats.outOfOrder.Add(1)
		d.w.log.Warn("event arrived after a later one of its user was sent; delivering it next",
			"seq", seq, "subject", e.subject, "in_flight", l.busy.seq)
	}
	i, _ := slices.BinarySearchFunc(l.queue, seq, func(x *entry, s uint64) int {
		switch {
		case x.seq < s:
			return -1
		case x.seq > s:
			return 1
		}
		return 0
	})
	l.queue = slices.Insert(l.queue, i, e)
	d.markReady(l)
	if d.holding && d.oldLeft <= 0 {
		d.release("all redelivered")
	}
}

func (d *dispatcher) markReady(l *lane) {
	if l.busy == nil && len(l.queue) > 0 && !l.ready && !d.w.stopping() {
		l.ready = true
		d.readyQ = append(d.readyQ, l)
	}
}

// peek is the job for the first ready lane.
func (d *dispatcher) peek() job {
	e := d.readyQ[0].queue[0]
	return job{e: e, msg: e.msg}
}

// pop marks the first ready lane's first entry as sent to a worker.
func (d *dispatcher) pop() {
	l := d.readyQ[0]
	d.readyQ[0] = nil
	d.readyQ = d.readyQ[1:]
	l.ready = false
	l.busy = l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	d.w.stats.inflight.Add(1)
}

// finish takes a worker's result.
func (d *dispatcher) finish(r result) {
	d.w.stats.inflight.Add(-1)
	l := d.lanes[r.e.key]
	l.busy = nil
	if !r.acked {
		// Given up because stopping: back to the front, to be NAKed.
		l.queue = slices.Insert(l.queue, 0, r.e)
		return
	}
	delete(d.held, r.e.seq)
	d.w.stats.pending.Add(-1)
	if len(l.queue) == 0 {
		delete(d.lanes, r.e.key)
		return
	}
	d.markReady(l)
}

// release ends the hold at start.
func (d *dispatcher) release(why string) {
	if !d.holding {
		return
	}
	d.holding = false
	d.w.log.Info("delivering", "why", why, "held", len(d.held), "waited", time.Since(d.started).Round(time.Millisecond).String())
}

// sorted returns the held sequences in ascending order.
func (d *dispatcher) sorted() []uint64 {
	d.seqs = d.seqs[:0]
	for s := range d.held {
		d.seqs = append(d.seqs, s)
	}
	slices.Sort(d.seqs)
	return d.seqs
}

// progress marks every held message in progress, in stream order, so that
// none times out, and so that their deadlines, should this process die,
// run out in stream order.
func (d *dispatcher) progress() {
	for _, s := range d.sorted() {
		if err := d.held[s].msg.InProgress(); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			d.w.log.Debug("in-progress mark failed", "seq", s, "err", err)
		}
	}
}

// nakAll NAKs every held message in stream order, so that the next consumer
// gets them at once and in order, and flushes the NAKs to the server.
func (d *dispatcher) nakAll() {
	if len(d.held) == 0 {
		return
	}
	var failed int
	for _, s := range d.sorted() {
		if err := d.held[s].msg.Nak(); err != nil {
			failed++
		}
	}
	if nc := d.w.cfg.NC; !nc.IsClosed() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = nc.FlushWithContext(ctx)
	}
	d.w.log.Info("stopped; returned the undelivered events to the consumer", "nak", len(d.held), "failed", failed)
}
