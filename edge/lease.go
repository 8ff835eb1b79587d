package edge

import (
	"context"
	"encoding/json"
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
		}
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
	tick := min(e.cfg.PingAfter, e.cfg.PongTimeout) / 4
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	var conns []*conn
	for {
		select {
		case <-t.C:
		case <-e.stopBG:
			return
		}
		now := time.Now().UnixNano()
		conns = conns[:0]
		e.mu.RLock()
		for c := range e.conns {
			conns = append(conns, c)
		}
		e.mu.RUnlock()
		for _, c := range conns {
			idle := time.Duration(now - c.lastRead.Load())
			switch {
			case idle > e.cfg.PingAfter+e.cfg.PongTimeout:
				e.stats.errors[reasonDeadSocket].Add(1)
				c.abort()
			case idle > e.cfg.PingAfter && !c.pinged.Load():
				c.pinged.Store(true)
				c.enqueue(ws.OpPing, nil)
			}
		}
	}
}
