package edge

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// heartbeat keeps the edge's lease in the edges bucket fresh. While the
// lease is fresh the registry keeps every name the edge holds; when the
// edge stops (or is cut off), the lease lapses and the registry releases
// them. After a gap, the sessions are checked against the users bucket,
// off this goroutine, so that a long check cannot lapse the lease itself;
// when the heartbeats keep failing for FenceAfter, the edge fences itself
// (fence).
func (e *Edge) heartbeat() {
	t := time.NewTicker(e.cfg.Heartbeat)
	defer t.Stop()
	var kv jetstream.KeyValue
	lastOK, lastTick := time.Now(), time.Now()
	fenced := false
	var verifying sync.Mutex
	put := func() bool {
		if !e.nc.IsConnected() {
			return false
		}
		// One heartbeat's time at most, so that a failing one cannot hold
		// up the fence.
		ctx, cancel := context.WithTimeout(e.stopCtx, min(e.cfg.RegistryTimeout, e.cfg.Heartbeat))
		defer cancel()
		if kv == nil {
			var err error
			if kv, err = e.js.KeyValue(ctx, subject.EdgesBucket); err != nil {
				e.log.Debug("edges bucket not there yet", "err", err)
				return false
			}
		}
		b, _ := json.Marshal(wire.EdgeLease{ID: e.cfg.ID, Instance: e.instance, Listen: e.cfg.Listen, At: time.Now().UTC()})
		if _, err := kv.Put(ctx, e.cfg.ID, b); err != nil {
			e.log.Warn("heartbeat failed", "err", err)
			return false
		}
		return true
	}
	beat := func() {
		now := time.Now()
		// A tick long overdue: this process was frozen (SIGSTOP) or starved.
		// It gets one heartbeat to find out what changed (and a check of
		// every session) before it fences itself.
		woke := now.Sub(lastTick) > 2*e.cfg.Heartbeat
		lastTick = now
		if !put() {
			if e.cfg.FenceAfter > 0 && !fenced && time.Since(lastOK) > e.cfg.FenceAfter && (!woke || !e.nc.IsConnected()) {
				fenced = true
				e.tryBG(e.fence)
			}
			return
		}
		if gap := time.Since(lastOK); gap > e.cfg.Heartbeat*3/2 && verifying.TryLock() {
			// Cut off for a while: the registry may have released names
			// held here meanwhile, and its presence.offline events were
			// lost with the connection. Check every session.
			e.log.Warn("heartbeats resumed after a gap; checking every session's name", "gap", gap.Round(time.Millisecond).String())
			if !e.tryBG(func() { defer verifying.Unlock(); e.verifySessions() }) {
				verifying.Unlock()
			}
		}
		lastOK = time.Now()
		fenced = false
	}
	beat()
	for {
		select {
		case <-t.C:
			beat()
		case <-e.stop:
			return
		}
	}
}

// fence closes every session of an edge whose heartbeats have failed for
// FenceAfter: the registry may give their names away once the lease
// lapses. Their logouts are queued and sent when the registry is back
// (guarded by revision, they release nothing that is someone else's now).
func (e *Edge) fence() {
	n := 0
	for _, s := range e.sessions.snapshot() {
		s.mu.Lock()
		c := s.conn
		held := s.state == sesHeld
		s.mu.Unlock()
		switch {
		case c != nil:
			c.closeWith(closeFenced)
			n++
		case held:
			s.mu.Lock()
			if s.state == sesHeld {
				s.timer.Stop()
				s.state = sesEnded
				e.stats.held.Add(-1)
				s.mu.Unlock()
				s.release(events.ReasonDrop)
				n++
				continue
			}
			s.mu.Unlock()
		}
	}
	if n > 0 {
		e.log.Warn("heartbeats failing; closed every session before the registry's lease can give their names away", "sessions", n, "after", e.cfg.FenceAfter.String())
	}
}

// verifyParallel bounds the users-bucket reads of one session check.
const verifyParallel = 32

// verifySessions closes (4001) every session whose name's entry in the
// users bucket is no longer the one its login created, so that no name is
// ever served twice after a partition. The reads go 32 at a time.
func (e *Edge) verifySessions() {
	kv := e.usersKV()
	if kv == nil {
		return
	}
	var mu sync.Mutex
	lost := 0
	sem := make(chan struct{}, verifyParallel)
	var wg sync.WaitGroup
	for _, s := range e.sessions.snapshot() {
		s.mu.Lock()
		ours := s.state == sesLive || s.state == sesHeld
		s.mu.Unlock()
		if !ours {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-e.stop:
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(e.stopCtx, e.cfg.RegistryTimeout)
			entry, err := kv.Get(ctx, s.token)
			cancel()
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			case err != nil:
				return // cannot tell; the next gap will
			case entry.Revision() == s.rev:
				return
			}
			mu.Lock()
			lost++
			mu.Unlock()
			e.lost(s, wire.Presence{Name: s.name, Session: s.id, Reason: events.ReasonEdgeLost})
		}()
	}
	wg.Wait()
	if lost > 0 {
		e.log.Warn("closed sessions whose names were released while this edge was cut off", "sessions", lost)
	}
}
