package edge

import (
	"time"

	"github.com/gobwas/ws"
)

// pinger closes dead sockets: a connection that has sent nothing for
// PingAfter gets a ping; one still silent PongTimeout later is cut, and its
// session ends like any connection that ended without a close frame
// (released at once, or held if it is resumable). One goroutine for the
// whole edge, not a timer per socket.
func (e *Edge) pinger() {
	tick := max(min(e.cfg.PingAfter, e.cfg.PongTimeout)/4, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var conns, due []*conn
	last := time.Now()
	for {
		select {
		case <-t.C:
		case <-e.stop:
			return
		}
		now := time.Now().UnixNano()
		conns = e.conns.all(conns[:0])
		if woke := time.Since(last) > 4*tick; woke {
			// This process was paused (frozen, starved): its clients' silence
			// is its own. Their silence counts from now.
			for _, c := range conns {
				c.lastRead.Store(now)
			}
		}
		last = time.Now()
		due = due[:0]
		for _, c := range conns {
			idle := time.Duration(now - c.lastRead.Load())
			switch {
			case idle > e.cfg.PingAfter+e.cfg.PongTimeout:
				e.stats.errors[reasonDeadSocket].Add(1)
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
			case <-e.stop:
				return false
			}
		}
		c.pinged.Store(true)
		c.enqueue(ws.OpPing, nil)
	}
	return true
}
