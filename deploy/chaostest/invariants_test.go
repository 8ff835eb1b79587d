package chaostest

import (
	"fmt"
	"sort"
	"time"
)

// What the test checks while the run goes on (sample, every 250ms, and
// onDelete, at every release the bucket shows); the frames are judged by
// settle (world_test.go) and the end state by finish (chaos_test.go).

// Bounds of the checks.
const (
	// closeBound: a connection whose name was released must be closed by
	// its edge within this long once the edge runs (a frozen edge: from its
	// SIGCONT).
	closeBound = 3 * time.Second
	// agreeBound: a logged-in connection and the bucket may disagree about
	// its name for this long (the bucket watch lags a moment, longer while
	// a stream elects a leader).
	agreeBound = 12 * time.Second
	// errWindow: an error frame excuses a lost frame sent at most this long
	// before it.
	errWindow = 3 * time.Second
)

// releaseWatch times the releases of the names an edge instance held when a
// fault hit it.
type releaseWatch struct {
	edge  int
	inst  string
	at    time.Time            // the fault
	held  map[string]bool      // name tokens it held then
	freed map[string]time.Time // when the bucket lost each
}

// times are how long after the fault each held name was freed.
func (rw *releaseWatch) times() []time.Duration {
	var out []time.Duration
	for _, at := range rw.freed {
		out = append(out, at.Sub(rw.at))
	}
	return out
}

// later lists the names freed later than d after the fault, with their
// times.
func (rw *releaseWatch) later(d time.Duration) []string {
	var out []string
	for tok, at := range rw.freed {
		if at.Sub(rw.at) > d {
			out = append(out, fmt.Sprintf("%s %v", tok, at.Sub(rw.at).Round(time.Millisecond)))
		}
	}
	sort.Strings(out)
	return out
}

// onDelete is the mirror's callback for a name whose holder prev lost it.
func (w *world) onDelete(tok string, prev holder, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rw := range w.watches {
		if rw.inst == prev.Instance && rw.held[tok] {
			if was, ok := rw.freed[tok]; !ok || at.Before(was) {
				rw.freed[tok] = at // the bucket's own time beats a poll's
			}
		}
	}
	u := w.byName[tok]
	if u == nil {
		return
	}
	for _, i := range u.incs {
		if i.closed || !i.owns(prev) || !i.released.IsZero() {
			continue
		}
		i.released = at
		if i.byTest {
			continue
		}
		switch es := w.edges[i.edge]; {
		case es.mode == edgeFrozen, es.mode == edgeDown:
		case !es.contAt.IsZero() && at.Sub(es.contAt) < closeBound:
			// The frozen edge, just continued: its releases came while it
			// was stopped; it closes these connections (checked there).
		default:
			w.n.liveReleased++
			w.violate("live name released", "the bucket lost %s's entry (edge %s, instance %s) while %v was open on a running edge", tok, prev.Edge, prev.Instance, i)
		}
	}
}

// sample checks the names: never two live connections for one name, and
// the bucket agrees with the connections. w.mu is held.
func (w *world) sample() {
	now := time.Now()
	entries := w.mir.snapshot()
	w.mir.mu.Lock()
	synced := w.mir.synced
	w.mir.mu.Unlock()
	open := 0
	for _, u := range w.users {
		incs := u.openIncs()
		open += len(incs)
		// Two live connections for one name: both logged in for a while,
		// the older one's edge running (and not just continued).
		for x := 0; x < len(incs); x++ {
			for y := x + 1; y < len(incs); y++ {
				old, young := incs[x], incs[y]
				if young.loginAt.Before(old.loginAt) {
					old, young = young, old
				}
				if now.Sub(young.loginAt) < closeBound || w.edges[old.edge].mode == edgeFrozen {
					continue
				}
				if c := w.edges[old.edge].contAt; !c.IsZero() && now.Sub(c) < closeBound {
					continue
				}
				key := [2]uint64{old.id, young.id}
				if !w.doubles[key] {
					w.doubles[key] = true
					w.violate("two live connections", "%v (logged in %v, released %v) and %v (logged in %v) are both open and logged in",
						old, old.loginAt.Sub(w.began).Round(time.Millisecond), relTo(old.released, w.began), young, young.loginAt.Sub(w.began).Round(time.Millisecond))
				}
			}
		}
		if !synced {
			continue
		}
		// The bucket agrees with the one connection that holds the name.
		h, has := entries[u.name]
		var holderInc *inc
		for _, i := range incs {
			if has && i.owns(h) {
				holderInc = i
			}
			if !i.released.IsZero() || w.edges[i.edge].mode != edgeUp {
				// Its edge is frozen or gone, or it lost its name: the
				// edge must close it soon.
				if !i.released.IsZero() && w.edges[i.edge].mode == edgeUp {
					since := now.Sub(i.released)
					if c := w.edges[i.edge].contAt; c.After(i.released) {
						since = now.Sub(c)
					}
					if since > closeBound && !w.doubles[[2]uint64{i.id, 0}] {
						w.doubles[[2]uint64{i.id, 0}] = true
						w.violate("kept after release", "%v is still open %v after it lost its name (and its edge runs)", i, since.Round(time.Millisecond))
					}
				}
				continue
			}
			w.agree(now, "missing:"+i.String(), has && i.owns(h) && h.Edge == w.cl.edges[i.edge].id,
				"%v is logged in, but the bucket says %v (present %v)", i, h, has)
		}
		if has && holderInc == nil {
			w.agree(now, "stale:"+u.name+"/"+h.Session, false, "the bucket holds %s for %s/%s (session %s, since %v), which has no open connection of it; its login attempts: %s",
				u.name, h.Edge, h.Instance, h.Session, h.Since.Sub(w.began).Round(time.Millisecond), w.history(u))
		} else if has {
			delete(w.disagree, "stale:"+u.name+"/"+h.Session)
		}
	}
	if open > w.n.maxOpen {
		w.n.maxOpen = open
	}
}

// agree tracks a condition that must not stay false for longer than
// agreeBound (or the lease and a margin, for stale entries of a frozen
// edge).
func (w *world) agree(now time.Time, key string, ok bool, format string, args ...any) {
	if ok {
		delete(w.disagree, key)
		return
	}
	first, seen := w.disagree[key]
	if !seen {
		w.disagree[key] = now
		return
	}
	bound := max(agreeBound, w.cfg.lease+5*time.Second)
	if now.Sub(first) > bound {
		w.violate("bucket disagrees", "for %v: "+format, append([]any{now.Sub(first).Round(time.Millisecond)}, args...)...)
		w.disagree[key] = now // once per bound
	}
}

func relTo(t, base time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprint(t.Sub(base).Round(time.Millisecond))
}

// statusSampler compares, every 2s, each running edge's own count of users
// (edge.<id>.status) with the connections the clients hold there: a
// difference of more than a few (logins and closes in flight) must not
// last longer than agreeBound.
func (w *world) statusSampler() {
	since := map[int]time.Time{}
	w.every(2*time.Second, func() {
		for k, e := range w.cl.edges {
			w.mu.Lock()
			es := w.edges[k]
			w.mu.Unlock()
			if es.mode != edgeUp || time.Since(es.contAt) < closeBound {
				delete(since, k)
				continue
			}
			st, err := w.cl.edgeStatus(e.id)
			if err != nil || st.Instance != es.instance {
				continue
			}
			w.mu.Lock()
			var n int64
			for _, u := range w.users {
				for _, i := range u.openIncs() {
					if i.edge == k && i.inst == st.Instance && i.released.IsZero() {
						n++
					}
				}
			}
			d := st.Users - n
			if d < 0 {
				d = -d
			}
			if d > w.n.maxStatusDiff {
				w.n.maxStatusDiff = d
			}
			now := time.Now()
			switch first, ok := since[k]; {
			case d <= 3:
				delete(since, k)
			case !ok:
				since[k] = now
			case now.Sub(first) > agreeBound:
				w.violate("edge count disagrees", "%s has counted %d users for %v; the clients hold %d there", e.id, st.Users, now.Sub(first).Round(time.Millisecond), n)
				since[k] = now
			}
			w.mu.Unlock()
		}
	})
}
