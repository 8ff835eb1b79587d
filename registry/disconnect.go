package registry

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// disconnectEvent is the part of the NATS server's client disconnect
// advisory (io.nats.server.advisory.v1.client_disconnect) that the registry
// reads.
type disconnectEvent struct {
	Client struct {
		Name string `json:"name"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// confirmPoll is how often a disconnected edge is asked whether it lives.
const confirmPoll = 50 * time.Millisecond

// watchDisconnects subscribes the NATS server's disconnect events. An
// edge's connection is named after its id and instance
// (wire.EdgeConnName); when it closes, the edge process is probably gone
// (kill -9, OOM, a crash), and the registry releases its names once it has
// confirmed that the edge did not just move to another NATS node: for
// DisconnectGrace it asks the edge's status endpoint and watches its lease.
// What the events cannot see (a partition, a frozen process, a lost
// machine) the lease still catches.
func (r *Registry) watchDisconnects() error {
	if r.cfg.DisconnectEvents == "-" {
		return nil
	}
	var mu sync.Mutex
	confirming := make(map[string]bool)
	sub, err := r.nc.Subscribe(r.cfg.DisconnectEvents, func(m *nats.Msg) {
		var ev disconnectEvent
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		id, inst, err := wire.ParseEdgeConnName(ev.Client.Name)
		if err != nil {
			return
		}
		r.view.mu.RLock()
		_, holds := r.view.insts[inst]
		rev := r.view.revs[inst]
		r.view.mu.RUnlock()
		if !holds {
			return
		}
		mu.Lock()
		if confirming[inst] {
			mu.Unlock()
			return
		}
		confirming[inst] = true
		mu.Unlock()
		r.metrics.disconnects.Inc()
		r.goBG(func() {
			defer func() { mu.Lock(); delete(confirming, inst); mu.Unlock() }()
			if r.edgeGone(id, inst, rev) {
				r.view.releaseInstance(inst, events.ReasonEdgeLost, "its NATS connection closed ("+ev.Reason+")")
			}
		})
	})
	if err != nil {
		return err
	}
	r.goBG(func() {
		<-r.bg.Done()
		_ = sub.Unsubscribe()
	})
	return nil
}

// edgeGone reports whether edge instance inst stays unreachable for
// DisconnectGrace: it does not answer on its status endpoint (or another
// instance with its id does) and its lease gets no heartbeat newer than rev.
func (r *Registry) edgeGone(id, inst string, rev uint64) bool {
	deadline := time.Now().Add(r.cfg.DisconnectGrace)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-r.bg.Done():
			return false
		case <-t.C:
		}
		m, err := r.nc.Request(subject.EdgeStatus(id), nil, confirmPoll)
		if err == nil {
			var st struct {
				Instance string `json:"instance"`
			}
			if json.Unmarshal(m.Data, &st) == nil {
				if st.Instance == inst {
					return false // reconnected: it lives
				}
				if st.Instance != "" {
					return true // the same id runs as a new process
				}
			}
		}
		r.view.mu.RLock()
		beat := r.view.revs[inst] != rev
		r.view.mu.RUnlock()
		if beat {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
		t.Reset(confirmPoll)
	}
}
