package edge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/subject"
)

// heartbeat keeps the edge's lease in the edges bucket fresh. While the
// lease is fresh the registry keeps every name the edge holds; when the
// edge dies, the lease lapses and the registry releases them.
func (e *Edge) heartbeat() {
	defer e.bgWG.Done()
	t := time.NewTicker(e.cfg.Heartbeat)
	defer t.Stop()
	var kv jetstream.KeyValue
	lastOK := time.Now()
	beat := func() {
		if !e.nc.IsConnected() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RegistryTimeout)
		defer cancel()
		if kv == nil {
			var err error
			if kv, err = e.js.KeyValue(ctx, subject.EdgesBucket); err != nil {
				e.log.Debug("edges bucket not there yet", "err", err)
				return
			}
		}
		b, _ := json.Marshal(registry.EdgeLease{ID: e.cfg.ID, Instance: e.instance, Listen: e.cfg.Listen, At: time.Now().UTC()})
		if _, err := kv.Put(ctx, e.cfg.ID, b); err != nil {
			e.log.Warn("heartbeat failed", "err", err)
			return
		}
		if gap := time.Since(lastOK); gap > e.cfg.Heartbeat*3/2 {
			// Cut off for a while: the registry may have released names
			// held here meanwhile, and its presence.offline events were
			// lost with the connection. Check every session.
			e.log.Warn("heartbeats resumed after a gap; checking every session's name", "gap", gap.Round(time.Millisecond).String())
			e.verifySessions()
		}
		lastOK = time.Now()
	}
	beat()
	for {
		select {
		case <-t.C:
			beat()
		case <-e.stopBG:
			return
		}
	}
}

// pinger closes dead sockets: a connection that has sent nothing for
// PingAfter gets a ping; one still silent PongTimeout later is closed like
// any other closed connection (name released, peer told). One goroutine
// for the whole edge, not a timer per socket.
func (e *Edge) pinger() {
	defer e.bgWG.Done()
	tick := max(min(e.cfg.PingAfter, e.cfg.PongTimeout)/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var conns, due []*conn
	for {
		select {
		case <-t.C:
		case <-e.stopBG:
			return
		}
		now := time.Now().UnixNano()
		conns = e.appendConns(conns[:0])
		due = due[:0]
		for _, c := range conns {
			idle := time.Duration(now - c.lastRead.Load())
			switch {
			case idle > e.cfg.PingAfter+e.cfg.PongTimeout:
				e.stats.errors[reasonDeadSocket].Add(1)
				// Silent this long: gone, not dropped a moment ago. Its
				// name is released at once rather than held for a resume
				// (a client that resumes meanwhile takes it over anyway).
				c.deliberate.Store(true)
				c.abort()
			case idle > e.cfg.PingAfter && !c.pinged.Load():
				due = append(due, c)
			}
		}
		clear(conns)
		if !e.pingSpread(due, tick/2) {
			return
		}
		clear(due)
	}
}

// pingBatch is how many sockets are pinged at once.
const pingBatch = 64

// pingSpread pings conns in batches spread over d: thousands of sockets that
// went idle together (a reconnect wave, a restart, a benchmark's ramp) are
// not all pinged, and do not all answer, in the same instant, which would
// delay everyone's messages behind them. False when the edge is stopping.
func (e *Edge) pingSpread(conns []*conn, d time.Duration) bool {
	gap := d / time.Duration((len(conns)+pingBatch-1)/pingBatch+1)
	var t *time.Timer
	for i, c := range conns {
		if i > 0 && i%pingBatch == 0 {
			if t == nil {
				t = time.NewTimer(gap)
				defer t.Stop()
			} else {
				t.Reset(gap)
			}
			select {
			case <-t.C:
			case <-e.stopBG:
				return false
			}
		}
		c.pinged.Store(true)
		c.enqueue(ws.OpPing, nil)
	}
	return true
}

// verifySessions closes (4001) every connection whose name's entry in the
// users bucket is no longer the one its login created, so that no name is
// ever served twice after a partition.
func (e *Edge) verifySessions() {
	kv := e.usersKV()
	if kv == nil {
		return
	}
	e.mu.RLock()
	conns := make([]*conn, 0, len(e.bySes))
	for _, c := range e.bySes {
		conns = append(conns, c)
	}
	e.mu.RUnlock()
	lost := 0
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RegistryTimeout)
		entry, err := kv.Get(ctx, c.token)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			continue // cannot tell; the next gap will
		case entry.Revision() == c.rev:
			continue
		}
		lost++
		e.revoke(c, closeNameLost)
	}
	if lost > 0 {
		e.log.Warn("closed connections whose names were released while this edge was cut off", "connections", lost)
	}
}
