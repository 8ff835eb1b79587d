package edge

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
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
// when the heartbeats keep failing for FenceAfter and no registry answers
// either (a partition, not a JetStream election that holds the registry up
// too), the edge fences itself (fence).
//
// A tick long overdue means this process was frozen (SIGSTOP, a stuck VM)
// or starved: the registry may have released its names meanwhile. From
// the moment any goroutine notices (paused), clients' messages are refused
// until a heartbeat went through and every session was checked.
func (e *Edge) heartbeat() {
	t := time.NewTicker(e.cfg.Heartbeat)
	defer t.Stop()
	var kv jetstream.KeyValue
	lastOK := time.Now()
	fenced := false
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
		woke := e.paused()
		e.lastTick.Store(time.Now().UnixNano())
		if woke {
			e.suspect.Store(true)
			e.log.Warn("the edge was paused (frozen or starved); refusing messages until every session is checked")
		}
		if !put() {
			if e.cfg.FenceAfter > 0 && !fenced && time.Since(lastOK) > e.cfg.FenceAfter && !e.registryAnswers() {
				fenced = true
				e.tryBG(e.fence)
			}
			return
		}
		gap := time.Since(lastOK)
		lastOK = time.Now()
		fenced = false
		if gap <= e.cfg.Heartbeat*3/2 && !e.suspect.Load() {
			return
		}
		// Cut off or paused for a while: the registry may have released
		// names held here meanwhile, and its presence.offline events were
		// lost with the connection. Check every session.
		if e.verifying.TryLock() {
			e.log.Warn("heartbeats resumed after a gap; checking every session's name", "gap", gap.Round(time.Millisecond).String())
			if !e.tryBG(func() {
				defer e.verifying.Unlock()
				if e.verifySessions() && e.suspect.Load() {
					e.suspect.Store(false)
					for _, s := range e.sessions.snapshot() {
						s.flushPaused()
					}
				}
			}) {
				e.verifying.Unlock()
			}
		}
	}
	e.lastTick.Store(time.Now().UnixNano())
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

// paused reports whether the heartbeat is long overdue: this process was
// frozen or starved (its lease may have lapsed meanwhile).
func (e *Edge) paused() bool {
	last := e.lastTick.Load()
	return last != 0 && time.Now().UnixNano()-last > int64(2*e.cfg.Heartbeat)
}

// registryAnswers reports whether a registry instance answers a micro ping:
// when heartbeats fail but a registry answers, JetStream is electing a
// leader (which holds the registry's releases up too), not a partition.
func (e *Edge) registryAnswers() bool {
	if !e.nc.IsConnected() {
		return false
	}
	_, err := e.nc.Request("$SRV.PING.registry", nil, min(e.cfg.Heartbeat, time.Second))
	return err == nil
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
// ever served twice after a partition. The reads go 32 at a time. It
// reports whether every session could be checked.
func (e *Edge) verifySessions() bool {
	var unknown atomic.Bool
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
			return false
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// From the stream's leader: a replica lagging after a
			// failover (likely, after a gap) would not have the entry,
			// and a name still ours would be closed and stay taken.
			ctx, cancel := context.WithTimeout(e.stopCtx, e.cfg.RegistryTimeout)
			op, _, rev, found, err := e.lastUserMsg(ctx, s.token)
			cancel()
			switch {
			case err != nil:
				unknown.Store(true)
				return // cannot tell; the next gap will
			case found && op == "" && rev == s.rev:
				return
			}
			mu.Lock()
			lost++
			mu.Unlock()
			// What it kept while the edge was paused is the new owner's.
			s.mu.Lock()
			s.queue, s.qbytes = nil, 0
			s.mu.Unlock()
			e.lost(s, wire.Presence{Name: s.name, Session: s.id, Reason: events.ReasonEdgeLost})
		}()
	}
	wg.Wait()
	if lost > 0 {
		e.log.Warn("closed sessions whose names were released while this edge was cut off", "sessions", lost)
	}
	return !unknown.Load()
}
