package registry

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/wire"
)

// Lease defaults.
const (
	// DefaultLease is how long an edge may go without a heartbeat before
	// the registry releases every name it holds. Edges heartbeat every
	// DefaultHeartbeat (edge package), a quarter of it. It is the bound for
	// what the NATS server's disconnect events cannot see: a partition, a
	// frozen process, a lost machine.
	DefaultLease = 10 * time.Second
	// DefaultSweep is how often the registry looks for lapsed leases.
	DefaultSweep = time.Second
)

// sweep releases the names of lapsed instances. While this registry is cut
// off from NATS it sees no heartbeats, so it releases nothing; once back, it
// gives every instance a whole lease again. Every registry runs one; they
// never fight, because a release is a delete guarded by the entry's
// revision: the first wins, the others find the revision gone.
func (v *view) sweep() {
	now := v.now()
	if !v.r.nc.IsConnected() {
		v.online = false
		return
	}
	v.mu.Lock()
	if !v.online {
		v.online = true
		for k := range v.seen {
			v.seen[k] = now
		}
		v.mu.Unlock()
		return
	}
	// The sweep looks at instances, not users: a round costs the same with
	// a hundred users as with a hundred thousand.
	type late struct{ edge, id string }
	var lates []late
	for id, in := range v.insts {
		last, ok := v.seen[id]
		if !ok {
			v.seen[id] = now
			continue
		}
		if now.Sub(last) > v.r.cfg.Lease {
			lates = append(lates, late{in.edge, id})
		}
	}
	for id, last := range v.seen {
		if v.insts[id] == nil && now.Sub(last) > 3*v.r.cfg.Lease {
			delete(v.seen, id)
			delete(v.revs, id)
		}
	}
	v.mu.Unlock()
	for _, l := range lates {
		// The watch may have stalled (a NATS node went away under it), which
		// looks like every edge going silent at once: confirm each lapsed
		// lease with a fresh read of the edges bucket before releasing.
		if v.lapsed(l.edge, l.id, now) {
			v.r.goBG(func() { v.releaseInstance(l.id, events.ReasonEdgeLost, "lease lapsed") })
		}
	}
}

// lapsed reads the lease of edge from the bucket: it has lapsed if the key
// is gone or holds another instance or no newer heartbeat than the last one
// seen. When the bucket cannot be read, nothing is released this round.
func (v *view) lapsed(edge, instance string, now time.Time) bool {
	ctx, cancel := v.r.bgCtx()
	defer cancel()
	e, err := v.r.edges.Get(ctx, edge)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return true
	case err != nil:
		v.r.log.Warn("cannot read the edges bucket; releasing nothing", "err", err)
		return false
	}
	var lease wire.EdgeLease
	if json.Unmarshal(e.Value(), &lease) != nil || lease.Instance != instance {
		return true
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.Revision() != v.revs[instance] {
		v.seen[instance] = now // a heartbeat the watch did not deliver
		v.revs[instance] = e.Revision()
		return false
	}
	return true
}

// announceParallel bounds the announcements (presence, events, rooms) of a
// dead edge's releases in flight.
const announceParallel = 32

// releaseInstance releases every name an edge instance holds and waits for
// it: the guarded purges go out pipelined (JetStream acknowledges them
// asynchronously), so that a few hundred names are free within a few round
// trips of the bucket, and each name released is announced. why is for the
// log.
func (v *view) releaseInstance(instance, reason, why string) {
	held := v.namesOf(instance)
	if len(held) == 0 {
		return
	}
	var edge string
	for _, h := range held {
		edge = h.inst.edge
		break
	}
	v.r.log.Info("edge gone; releasing its names", "why", why, "names", len(held), "edge", edge, "instance", instance)
	type pending struct {
		tok string
		h   holder
		f   jetstream.PubAckFuture
	}
	var sent []pending
	for tok, h := range held {
		if !v.claim(tok) {
			continue
		}
		f, err := v.r.js.PublishMsgAsync(v.r.purgeMsg(tok, h.rev), jetstream.WithMsgTTL(v.r.cfg.MarkerTTL))
		if err != nil {
			v.unclaim(tok)
			v.r.log.Warn("release failed; the next sweep tries again", "err", err)
			continue
		}
		sent = append(sent, pending{tok, h, f})
	}
	ctx, cancel := v.r.bgCtx()
	defer cancel()
	sem := make(chan struct{}, announceParallel)
	var wg sync.WaitGroup
	for _, p := range sent {
		ok := false
		select {
		case <-p.f.Ok():
			ok = true
		case err := <-p.f.Err():
			if !errors.Is(mapRevisionMismatch(err), jetstream.ErrKeyRevisionMismatch) {
				v.r.log.Warn("release failed; the next sweep tries again", "err", err)
			}
		case <-ctx.Done():
		}
		if !ok {
			v.unclaim(p.tok)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer v.unclaim(p.tok)
			v.announce(ctx, p.tok, p.h, reason, "")
		}()
	}
	wg.Wait()
}

// claim marks tok as being released; false if it already is.
func (v *view) claim(tok string) bool {
	v.busyMu.Lock()
	defer v.busyMu.Unlock()
	if v.busy[tok] {
		return false
	}
	v.busy[tok] = true
	return true
}

func (v *view) unclaim(tok string) {
	v.busyMu.Lock()
	delete(v.busy, tok)
	v.busyMu.Unlock()
}

// release removes tok if it still holds h and tells everyone (released). It
// reports whether it removed it.
func (v *view) release(tok string, h holder, reason, message string) bool {
	ctx, cancel := v.r.bgCtx()
	defer cancel()
	err := v.r.releaseRev(ctx, tok, h.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return false // someone else released it, or it has a new owner
	}
	if err != nil {
		v.r.log.Warn("release failed; the next sweep tries again", "err", err)
		return false
	}
	v.announce(ctx, tok, h, reason, message)
	return true
}

// announce counts and tells everyone of a release by the registry itself.
func (v *view) announce(ctx context.Context, tok string, h holder, reason, message string) {
	v.r.metrics.releases.WithLabelValues(reason).Inc()
	p := h.presence(tok, reason)
	p.Message = message
	v.r.released(ctx, tok, p, nil)
}

// purgeMsg is the guarded purge of tok at revision rev, as KeyValue.Purge
// writes it: for a pipelined publish.
func (r *Registry) purgeMsg(tok string, rev uint64) *nats.Msg {
	m := nats.NewMsg("$KV." + r.users.Bucket() + "." + tok)
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	return m
}

// mapRevisionMismatch maps JetStream's "wrong last sequence" to
// ErrKeyRevisionMismatch, as the KV API does.
func mapRevisionMismatch(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeWrongLastSeq {
		return jetstream.ErrKeyRevisionMismatch
	}
	return err
}
