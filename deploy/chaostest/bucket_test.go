package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The users bucket as the test sees it: a watch (an ordered consumer of the
// observer) keeps a copy, and tells the world of every put and delete with
// the time the bucket stored it (the stream's timestamp: the nodes and the
// test share this machine's clock), which is when the test considers a
// name taken or released.

// holder is a users-bucket value (wire.Entry, the fields the test reads).
type holder struct {
	Name     string    `json:"name"`
	Edge     string    `json:"edge"`
	Instance string    `json:"instance"`
	Session  string    `json:"session"`
	Since    time.Time `json:"since"`
}

type mirror struct {
	kv jetstream.KeyValue

	mu      sync.Mutex
	entries map[string]holder // name token -> holder
	synced  bool              // the initial values have arrived
	resets  int               // watches started again
	ops     int

	// onPut and onDelete are called without mu, in the order of the
	// bucket's operations.
	onPut    func(tok string, h holder, at time.Time)
	onDelete func(tok string, prev holder, at time.Time)
}

// run watches the bucket until ctx ends; a watch that ends (its consumer
// lost) is started again and reconciled with the copy.
func (m *mirror) run(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := m.kv.WatchAll(ctx)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		m.follow(ctx, w)
		_ = w.Stop()
		m.mu.Lock()
		m.resets++
		m.mu.Unlock()
	}
}

func (m *mirror) follow(ctx context.Context, w jetstream.KeyWatcher) {
	fresh := map[string]holder{} // the initial values of this watch
	initial := true
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return
		case e, ok = <-w.Updates():
		}
		if !ok {
			return
		}
		now := time.Now()
		if e == nil {
			// End of the initial values: whatever the copy has and they do
			// not was deleted while no watch ran.
			initial = false
			m.mu.Lock()
			var gone []string
			var prevs []holder
			for tok, h := range m.entries {
				if _, ok := fresh[tok]; !ok {
					gone = append(gone, tok)
					prevs = append(prevs, h)
					delete(m.entries, tok)
				}
			}
			m.synced = true
			m.mu.Unlock()
			for i, tok := range gone {
				if m.onDelete != nil {
					m.onDelete(tok, prevs[i], now)
				}
			}
			continue
		}
		// The time the bucket stored the operation (the server's clock,
		// this machine's): a watch that lags does not make a release look
		// late.
		now = e.Created()
		tok := e.Key()
		switch e.Operation() {
		case jetstream.KeyValuePut:
			var h holder
			_ = json.Unmarshal(e.Value(), &h)
			if initial {
				fresh[tok] = h
			}
			m.mu.Lock()
			prev, had := m.entries[tok]
			m.entries[tok] = h
			m.ops++
			m.mu.Unlock()
			if had && prev != h && m.onDelete != nil {
				m.onDelete(tok, prev, now) // replaced: the old holder lost it
			}
			if (!had || prev != h) && m.onPut != nil {
				m.onPut(tok, h, now)
			}
		default: // delete, purge
			m.mu.Lock()
			prev, had := m.entries[tok]
			delete(m.entries, tok)
			m.ops++
			m.mu.Unlock()
			if had && m.onDelete != nil {
				m.onDelete(tok, prev, now)
			}
		}
	}
}

// get returns the holder of tok in the copy.
func (m *mirror) get(tok string) (holder, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.entries[tok]
	return h, ok
}

// snapshot copies the copy.
func (m *mirror) snapshot() map[string]holder {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]holder, len(m.entries))
	for k, v := range m.entries {
		out[k] = v
	}
	return out
}

// readBucket reads the whole bucket afresh (a watch of its current values),
// independently of the copy: the final comparison uses it.
func readBucket(ctx context.Context, kv jetstream.KeyValue) (map[string]holder, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	out := map[string]holder{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch ended")
			}
			if e == nil {
				return out, nil
			}
			var h holder
			if err := json.Unmarshal(e.Value(), &h); err != nil {
				return nil, err
			}
			out[e.Key()] = h
		}
	}
}
