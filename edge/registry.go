package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/subject"
	"github.com/natsrtc/signal/services/wire"
)

// Errors of registry requests.
var (
	// errNoRegistry: no registry instance answered within the registry
	// timeout (none is reachable).
	errNoRegistry = errors.New("no registry is reachable")
	// errRegistryTimeout: a registry took the request and did not answer;
	// it may have done it.
	errRegistryTimeout = errors.New("the registry did not answer in time")
	errStopping        = errors.New("edge is shutting down")
)

// registryError is a 4xx reply of the registry: the request was wrong, and
// retrying it would not help.
type registryError struct{ code, msg string }

func (e *registryError) Error() string { return "registry: " + e.code + " " + e.msg }

// noRegistryWait is how long a request keeps trying while no registry
// instance is subscribed at all.
const noRegistryWait = 500 * time.Millisecond

// attemptTimeout bounds one attempt of a registry request: a registry
// instance that dies with the request leaves it unanswered, and the next
// attempt goes to another instance of the queue group. A retried request is
// harmless: login and logout are idempotent.
func (e *Edge) attemptTimeout() time.Duration {
	return max(e.cfg.RegistryTimeout/4, 250*time.Millisecond)
}

// call sends a request to the registry and decodes its reply into rep,
// retrying within ctx when no instance answers, an instance does not answer
// in time, or one is stopping (503).
func (e *Edge) call(ctx context.Context, subj string, req, rep any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var last error = errNoRegistry
	backoff := 20 * time.Millisecond
	var noneSince time.Time // when no registry answered first, in a row
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return last
			case <-t.C:
			}
			backoff = min(2*backoff, 250*time.Millisecond)
		}
		actx, cancel := context.WithTimeout(ctx, e.attemptTimeout())
		m, err := e.nc.RequestWithContext(actx, subj, body)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, nats.ErrNoResponders):
			// No instance subscribed: one restarting is back within a
			// moment; none at all (a region cut off from its registries)
			// should fail fast, with a clear error.
			if noneSince.IsZero() {
				noneSince = time.Now()
			} else if time.Since(noneSince) > noRegistryWait {
				return errNoRegistry
			}
			if last != errRegistryTimeout {
				last = errNoRegistry
			}
			continue
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			last = errRegistryTimeout
			if ctx.Err() != nil {
				return last
			}
			continue
		case errors.Is(err, context.Canceled):
			return errRegistryTimeout // stopping: it may have been done
		default:
			last = err
			if ctx.Err() != nil {
				return last
			}
			continue
		}
		if code := m.Header.Get(wire.ErrorCodeHeader); code != "" {
			if code == wire.CodeUnavailable || code == wire.CodeInternal {
				last = fmt.Errorf("registry: %s %s", code, m.Header.Get(wire.ErrorHeader))
				continue // another instance, or a moment later
			}
			return &registryError{code: code, msg: m.Header.Get(wire.ErrorHeader)}
		}
		return json.Unmarshal(m.Data, rep)
	}
}

// logoutResult is what a logout found.
type logoutResult uint8

const (
	logoutReleased logoutResult = iota // the name was ours, and is free (or was nobody's)
	logoutNotOwner                     // another session holds it (a resume)
	logoutQueued                       // no answer: the retrier tries again
)

// logout releases s's name in the registry. It reports whether the peers
// should be told: the name was ours (or is nobody's now).
func (e *Edge) logout(s *session, reason string) bool {
	return e.logoutOutcome(s, reason) != logoutNotOwner
}

// logoutOutcome releases s's name; a logout that gets no answer is queued
// for the retrier.
func (e *Edge) logoutOutcome(s *session, reason string) logoutResult {
	req := s.logoutRequest(reason)
	ctx, cancel := e.reqCtx()
	defer cancel()
	var rep wire.LogoutReply
	if err := e.call(ctx, subject.RegistryLogout, req, &rep); err != nil {
		e.log.Debug("logout failed; retrying in the background", "err", err)
		e.retry.add(req)
		return logoutQueued
	}
	if rep.OK || rep.Reason == wire.ReasonNotFound {
		return logoutReleased
	}
	return logoutNotOwner
}

// logoutRequest is the logout of s's entry.
func (s *session) logoutRequest(reason string) wire.LogoutRequest {
	s.mu.Lock()
	var rooms []string
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()
	return wire.LogoutRequest{
		Name: s.name, Session: s.id, Revision: s.rev, Edge: s.e.cfg.ID, Instance: s.e.instance,
		Reason: reason, Rooms: rooms,
	}
}

// retryQueue holds logouts that failed, to be tried again. It is unbounded
// on purpose: each entry is a name that would otherwise stay taken while
// this edge lives. It grows only while the registry cannot be reached, by
// at most one entry per session that ended (or login that timed out)
// meanwhile.
type retryQueue struct {
	mu   sync.Mutex
	reqs []retryItem
}

// retryItem is a logout to try again. Until a time (a login whose reply was
// lost), "not found" is not an answer either: the registry's create may
// still land, a JetStream leader election later.
type retryItem struct {
	req   wire.LogoutRequest
	until time.Time
}

func (q *retryQueue) add(r wire.LogoutRequest) { q.addItem(retryItem{req: r}) }

func (q *retryQueue) addItem(it retryItem) {
	q.mu.Lock()
	q.reqs = append(q.reqs, it)
	q.mu.Unlock()
}

func (q *retryQueue) take() []retryItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	r := q.reqs
	q.reqs = nil
	return r
}

func (q *retryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.reqs)
}

// logoutRetrier retries failed logouts until they succeed, so that a name
// is not left taken by a session that is gone while its edge lives on. At
// Shutdown it makes one last pass, all at once, under Shutdown's context;
// what fails then is left to the lease.
func (e *Edge) logoutRetrier() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		final := false
		select {
		case <-t.C:
		case <-e.stop:
			final = true
		}
		pending := e.retry.take()
		if len(pending) > 0 && (final || e.nc.IsConnected()) {
			e.retryLogouts(pending, final)
		} else {
			for _, r := range pending {
				e.retry.addItem(r)
			}
		}
		if final {
			return
		}
	}
}

// retryLogouts sends items, at most 16 at a time, and queues again those
// that fail (or find nothing while they should keep looking; not in the
// final pass).
func (e *Edge) retryLogouts(items []retryItem, final bool) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := e.reqCtx()
			defer cancel()
			var rep wire.LogoutReply
			err := e.call(ctx, subject.RegistryLogout, it.req, &rep)
			if err != nil || (!final && rep.Reason == wire.ReasonNotFound && time.Now().Before(it.until)) {
				e.retry.addItem(it)
			}
		}()
	}
	wg.Wait()
}

// cleanupLogin queues the logout of a login whose reply was lost: the
// registry may have created the entry. Without a revision, the logout
// removes the entry only if it is still that session's.
func (e *Edge) cleanupLogin(name, session string) {
	e.retry.addItem(retryItem{
		req:   wire.LogoutRequest{Name: name, Session: session, Edge: e.cfg.ID, Instance: e.instance, Reason: events.ReasonClose},
		until: time.Now().Add(cleanupWindow),
	})
}

// cleanupWindow is how long the logout of a login whose reply was lost
// keeps looking for the entry: a create proposed before a JetStream leader
// was lost lands once a new one is elected (seen: 4 to 13 s).
const cleanupWindow = 30 * time.Second
