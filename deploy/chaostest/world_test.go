package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
)

// The world is everything the test's clients do and see: users, each with
// its connections (incarnations: one login on one edge, from the login
// reply to the close), calls relaying numbered frames, and the record of
// what was sent and what arrived, from which the invariants are judged.
// One mutex (world.mu) guards it all: a few thousand events a second.

// edgeMode is what the test did to an edge.
type edgeMode int

const (
	edgeUp edgeMode = iota
	edgeDown
	edgeFrozen
)

// edgeState is an edge as the fault schedule left it.
type edgeState struct {
	mode     edgeMode
	instance string    // of the running process
	contAt   time.Time // last SIGCONT
}

// user is a name and its connections.
type user struct {
	name  string
	home  int   // the edge it logs in at when that one is up
	call  *call // nil: idle
	churn bool  // may be churned (idle, no probe)
	incs  []*inc
	open  int // incarnations not closed
	wake  chan struct{}
	tries []attempt // the last few login attempts, for reports
}

// attempt is one login attempt of a user.
type attempt struct {
	at, end time.Time
	edge    int
	result  string
}

// inc is one logged-in connection of a user.
type inc struct {
	id       uint64
	u        *user
	edge     int
	inst     string // the edge's instance when the login succeeded
	c        *client.Client
	tryAt    time.Time // the login attempt began
	loginAt  time.Time // its reply arrived
	closed   bool
	closedAt time.Time
	code     int
	reason   string
	byTest   bool      // the test closed it
	released time.Time // the bucket lost its entry while it was open
	errs     []time.Time
	errUsed  int               // errors matched to lost frames so far
	last     map[uint32]uint32 // stream -> highest seq received
	leaveAt  time.Time         // first leave since the last mark
	quiet    int               // quiet calls' offers and answers received
	done     chan struct{}
}

// owns reports whether h is the entry i's login created: the registry
// stamps it (Since) between the attempt and its reply, on this machine's
// clock.
func (i *inc) owns(h holder) bool {
	const slack = 5 * time.Millisecond
	return h.Instance == i.inst && !h.Since.Before(i.tryAt.Add(-slack)) && !h.Since.After(i.loginAt.Add(slack))
}

func (i *inc) String() string {
	return fmt.Sprintf("%s#%d@e%d", i.u.name, i.id, i.edge+1)
}

// call is a pair of users relaying frames both ways, in epochs: an epoch
// starts when both have a live connection and ends when either connection
// ends, either side hears leave or an error, or the test ends it.
type call struct {
	id      int
	a, b    *user
	epoch   int
	active  bool
	endedAt time.Time
	st      [2]*stream // a to b, b to a
	paused  bool
}

// stream is one direction of one epoch of a call, or a probe: frames
// numbered 1, 2, ... from one connection to a name.
type stream struct {
	id       uint32
	kind     string // "call", "probe"
	from     *inc
	to       *inc // the connection the frames are meant for
	toName   string
	sent     []time.Time
	dl       [][]delivery // per frame, where it arrived
	ended    bool
	endAt    time.Time
	endWhy   string
	abnormal bool // ended by a close, a leave or an error, not by the test
	gone     bool // the connection it was meant for closed
	settled  bool
}

type delivery struct {
	to *inc
	at time.Time
}

// violation is a broken invariant.
type violation struct {
	at   time.Duration // since the run began
	kind string
	what string
}

// counters are the run's figures.
type counters struct {
	logins, loginFails, dialFails   int
	loginFailWhy                    map[string]int
	framesSent, framesDelivered     int
	lostExcusedTail, lostExcusedErr int
	strays                          int
	errorFrames                     map[string]int
	closes                          map[string]int
	unexpected                      int
	churned                         int
	epochs                          int
	maxOpen                         int
	liveReleased                    int
	giveUps                         int
	maxStatusDiff                   int64
	impersonated                    int
}

type world struct {
	t      *testing.T
	cl     *cluster
	cfg    config
	began  time.Time
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mir    *mirror

	mu         sync.Mutex
	users      []*user
	byName     map[string]*user
	calls      []*call
	streams    map[uint32]*stream
	nextStream uint32
	nextInc    uint64
	edges      []edgeState
	viols      []violation
	violKinds  map[string]int
	n          counters
	noChurn    bool
	doubles    map[[2]uint64]bool // pairs of connections already reported
	disagree   map[string]time.Time
	watches    []*releaseWatch
	probes     []*stream // probe streams still sending
	loginMark  time.Time // firstLogin is the first login after it
	firstLogin time.Time
}

func newWorld(t *testing.T, cl *cluster, cfg config) *world {
	w := &world{
		t: t, cl: cl, cfg: cfg, began: time.Now(),
		byName:    map[string]*user{},
		streams:   map[uint32]*stream{},
		violKinds: map[string]int{},
		doubles:   map[[2]uint64]bool{},
		disagree:  map[string]time.Time{},
	}
	w.n.loginFailWhy = map[string]int{}
	w.n.errorFrames = map[string]int{}
	w.n.closes = map[string]int{}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.edges = make([]edgeState, len(cl.edges))
	return w
}

// since is the time since the run began, for logs.
func (w *world) since() time.Duration { return time.Since(w.began).Round(time.Millisecond) }

// violate records a broken invariant (the first 25 of each kind with
// their details); w.mu is held.
func (w *world) violate(kind, format string, args ...any) {
	w.violKinds[kind]++
	if w.violKinds[kind] <= 25 {
		w.viols = append(w.viols, violation{at: w.since(), kind: kind, what: fmt.Sprintf(format, args...)})
	}
}

// go runs f as a goroutine of the world (stopped by w.cancel, waited by
// w.wg).
func (w *world) goWorld(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// addUsers makes the users and the calls: users i and i+1 are the calls'
// pairs (their homes differ, except every fourth call, whose users share an
// edge), the rest are idle.
func (w *world) addUsers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	ne := len(w.cl.edges)
	for i := range w.cfg.users {
		u := &user{name: fmt.Sprintf("u%04d", i), home: i % ne, wake: make(chan struct{}, 1)}
		w.users = append(w.users, u)
		w.byName[u.name] = u
	}
	for c := range w.cfg.calls {
		a, b := w.users[2*c], w.users[2*c+1]
		if c%4 == 0 {
			b.home = a.home
		}
		cl := &call{id: c, a: a, b: b}
		a.call, b.call = cl, cl
		w.calls = append(w.calls, cl)
	}
	for _, u := range w.users {
		u.churn = u.call == nil
	}
}

// pickEdge is where u logs in next: its home when that edge is up, else
// the next one that is. -1: none is up.
func (w *world) pickEdge(u *user) int {
	ne := len(w.edges)
	for k := range ne {
		e := (u.home + k) % ne
		if w.edges[e].mode == edgeUp {
			return e
		}
	}
	return -1
}

// life keeps u logged in: whenever it has no open connection, it logs in
// again (at its home edge if that is up), retrying until it succeeds.
func (w *world) life(u *user) {
	for w.ctx.Err() == nil {
		w.mu.Lock()
		open := u.open
		w.mu.Unlock()
		if open > 0 {
			select {
			case <-u.wake:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		w.login(u, -1)
	}
}

// login logs u in at edge e (-1: pickEdge), retrying every 100-300ms until
// it succeeds or the world stops.
func (w *world) login(u *user, e int) *inc {
	for attempt := 0; w.ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			pause(w.ctx, time.Duration(100+rand.IntN(200))*time.Millisecond)
		}
		w.mu.Lock()
		edge := e
		if edge < 0 {
			edge = w.pickEdge(u)
		}
		if edge < 0 || w.edges[edge].mode != edgeUp {
			w.mu.Unlock()
			continue
		}
		inst := w.edges[edge].instance
		w.mu.Unlock()
		if i := w.tryLogin(u, edge, inst); i != nil {
			return i
		}
	}
	return nil
}

// tryLogin makes one attempt; nil if it failed.
func (w *world) tryLogin(u *user, edge int, inst string) *inc {
	tryAt := time.Now()
	result := "ok"
	defer func() {
		w.mu.Lock()
		u.tries = append(u.tries, attempt{at: tryAt, end: time.Now(), edge: edge, result: result})
		if len(u.tries) > 6 {
			u.tries = u.tries[1:]
		}
		w.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(w.ctx, 8*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, w.cl.edges[edge].ws, &client.Options{Timeout: 3 * time.Second})
	if err != nil {
		w.mu.Lock()
		w.n.dialFails++
		w.mu.Unlock()
		result = "dial: " + err.Error()
		return nil
	}
	m, err := c.Login(ctx, u.name)
	if err != nil {
		_ = c.Abort()
		why := "error"
		switch {
		case errors.Is(err, client.ErrNameTaken):
			why = "refused: " + m.Message
		case m.Type == "error":
			why = "error frame: " + m.Message
		default:
			why = err.Error()
		}
		if len(why) > 80 {
			why = why[:80]
		}
		w.mu.Lock()
		w.n.loginFails++
		w.n.loginFailWhy[why]++
		w.mu.Unlock()
		result = why
		return nil
	}
	w.mu.Lock()
	w.nextInc++
	i := &inc{id: w.nextInc, u: u, edge: edge, inst: inst, c: c, tryAt: tryAt, loginAt: time.Now(), last: map[uint32]uint32{}, done: make(chan struct{})}
	u.incs = append(u.incs, i)
	u.open++
	w.n.logins++
	if !w.loginMark.IsZero() && w.firstLogin.IsZero() {
		w.firstLogin = i.loginAt
	}
	// Only the last few incarnations matter; keep memory bounded in a soak.
	if len(u.incs) > 8 {
		keep := u.incs[:0]
		for k, x := range u.incs {
			if !x.closed || k >= len(u.incs)-4 {
				keep = append(keep, x)
			}
		}
		u.incs = keep
	}
	w.mu.Unlock()
	w.goWorld(func() { w.recv(i) })
	return i
}

// history formats u's last login attempts; w.mu is held.
func (w *world) history(u *user) string {
	var b strings.Builder
	for _, a := range u.tries {
		fmt.Fprintf(&b, "[%v+%v e%d %s] ", a.at.Sub(w.began).Round(time.Millisecond), a.end.Sub(a.at).Round(time.Millisecond), a.edge+1, a.result)
	}
	return b.String()
}

// payload is the body of every frame the test relays.
type payload struct {
	K uint32 `json:"k"`
	N uint32 `json:"n"`
	Q int    `json:"q"` // a quiet call's setup, not numbered
}

// recv reads i's messages until its connection closes.
func (w *world) recv(i *inc) {
	for {
		m, err := i.c.Recv(w.ctx)
		if err != nil {
			if w.ctx.Err() != nil {
				_ = i.c.Abort()
				return
			}
			code, reason := i.c.CloseStatus()
			w.closed(i, int(code), reason)
			return
		}
		w.message(i, m)
	}
}

// message handles one message received on i.
func (w *world) message(i *inc, m client.Message) {
	now := time.Now()
	var body struct {
		Name string          `json:"name"`
		Data json.RawMessage `json:"data"`
	}
	var raw json.RawMessage
	switch m.Type {
	case "candidate":
		raw = m.Candidate
	case "offer":
		raw = m.Offer
	case "answer":
		raw = m.Answer
	case "message":
		_ = json.Unmarshal(m.Raw, &body)
		raw = body.Data
	case "leave":
		w.mu.Lock()
		if i.leaveAt.IsZero() {
			i.leaveAt = now
		}
		w.heard(i, "leave")
		w.mu.Unlock()
		return
	case "error":
		w.mu.Lock()
		i.errs = append(i.errs, now)
		msg := m.Message
		if strings.HasPrefix(msg, "user \"") && strings.HasSuffix(msg, "\" is not online") {
			msg = "user ... is not online"
		}
		// "N messages to "X" were lost in transit ...": one error for each.
		if n, rest, ok := strings.Cut(msg, " "); ok && strings.Contains(rest, " lost in transit ") {
			if k, err := strconv.Atoi(n); err == nil && k > 1 && k < 1000 {
				for range k - 1 {
					i.errs = append(i.errs, now)
				}
			}
			msg = "N messages to ... lost in transit"
		}
		w.n.errorFrames[msg]++
		w.heard(i, "error")
		w.mu.Unlock()
		return
	default:
		w.mu.Lock()
		w.n.unexpected++
		w.violate("unexpected message", "%v received %s", i, m.Raw)
		w.mu.Unlock()
		return
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err == nil && p.Q != 0 {
		// A quiet call's offer or answer (see quietCalls).
		w.mu.Lock()
		i.quiet++
		w.mu.Unlock()
		return
	}
	if err := json.Unmarshal(raw, &p); err != nil || p.K == 0 {
		w.mu.Lock()
		w.violate("unexpected message", "%v received %s", i, m.Raw)
		w.mu.Unlock()
		return
	}
	from := m.Name
	if m.Type == "message" {
		from = body.Name
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.streams[p.K]
	if st == nil || p.N < 1 || int(p.N) > len(st.sent) {
		w.violate("frame never sent", "%v received %s", i, m.Raw)
		return
	}
	if i.u.name != st.toName {
		w.violate("misdelivered", "%v received frame %d of stream %d for %s: %s", i, p.N, st.id, st.toName, m.Raw)
		return
	}
	if (m.Type == "offer" || m.Type == "message") && from != st.from.u.name {
		w.violate("wrong sender", "%v received frame %d of stream %d from %s stamped %q", i, p.N, st.id, st.from, from)
	}
	w.n.framesDelivered++
	dl := st.dl[p.N-1]
	for _, d := range dl {
		if d.to == i {
			w.violate("duplicate", "%v received frame %d of stream %d (%v to %s) again", i, p.N, st.id, st.from, st.toName)
		}
	}
	if last := i.last[p.K]; p.N <= last {
		dup := false
		for _, d := range dl {
			dup = dup || d.to == i
		}
		if !dup {
			w.violate("out of order", "%v received frame %d of stream %d after frame %d", i, p.N, st.id, last)
		}
	} else {
		i.last[p.K] = p.N
	}
	st.dl[p.N-1] = append(dl, delivery{to: i, at: now})
	if i != st.to {
		w.n.strays++
	}
}

// closed records the end of i's connection.
func (w *world) closed(i *inc, code int, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i.closed {
		return
	}
	i.closed, i.closedAt, i.code, i.reason = true, time.Now(), code, reason
	i.u.open--
	key := fmt.Sprint(code)
	if code == 0 {
		key = "none (reset or EOF)"
	} else if reason != "" {
		key += " " + reason
	}
	if i.byTest {
		key = "by the test"
	}
	w.n.closes[key]++
	w.heard(i, "closed")
	for _, st := range w.streams {
		if !st.ended && st.to == i {
			st.gone = true // frames from now on cannot arrive
		}
	}
	close(i.done)
	select {
	case i.u.wake <- struct{}{}:
	default:
	}
}

// heard ends the streams that i sends, as its client would on what it
// heard (leave, an error) or on its own connection's end: a client knows
// nothing else of its peer. w.mu is held.
func (w *world) heard(i *inc, why string) {
	for _, st := range w.streams {
		if st.from == i && !st.ended {
			w.endStream(st, why, !i.byTest || why != "closed")
		}
	}
	if c := i.u.call; c != nil && c.active && c.st[0].ended && c.st[1].ended {
		c.active = false
		c.endedAt = time.Now()
	}
}

// endEpoch ends c's epoch; w.mu is held.
func (w *world) endEpoch(c *call, why string, abnormal bool) {
	if !c.active {
		return
	}
	c.active = false
	c.endedAt = time.Now()
	for _, st := range c.st {
		w.endStream(st, why, abnormal)
	}
}

func (w *world) endStream(st *stream, why string, abnormal bool) {
	if st.ended {
		return
	}
	st.ended, st.endAt, st.endWhy, st.abnormal = true, time.Now(), why, abnormal
}

// newStream makes a stream from one connection to another; w.mu is held.
func (w *world) newStream(kind string, from, to *inc) *stream {
	w.nextStream++
	st := &stream{id: w.nextStream, kind: kind, from: from, to: to, toName: to.u.name}
	w.streams[st.id] = st
	return st
}

// next numbers the stream's next frame and returns what to send; w.mu is
// held. typ is "candidate" unless the frame opens (or renegotiates) a call.
func (st *stream) next(first string) []byte {
	n := uint32(len(st.sent) + 1)
	st.sent = append(st.sent, time.Now())
	st.dl = append(st.dl, nil)
	p := fmt.Sprintf(`{"k":%d,"n":%d}`, st.id, n)
	to := st.toName
	switch {
	case st.kind == "probe":
		return []byte(`{"type":"message","name":"` + to + `","data":` + p + `}`)
	case n%50 == 1 && first == "offer":
		return []byte(`{"type":"offer","name":"` + to + `","offer":` + p + `}`)
	case n%50 == 1 && first == "answer":
		return []byte(`{"type":"answer","name":"` + to + `","answer":` + p + `}`)
	default:
		return []byte(`{"type":"candidate","name":"` + to + `","candidate":` + p + `}`)
	}
}

// live is u's connection that can call: open, logged in, its name not lost,
// on an edge that is up; nil if none (or more than one).
func (u *user) live(w *world) *inc {
	var found *inc
	for _, i := range u.incs {
		if i.closed || !i.released.IsZero() || w.edges[i.edge].mode != edgeUp {
			continue
		}
		if found != nil {
			return nil
		}
		found = i
	}
	return found
}

// openIncs are u's connections that are not closed.
func (u *user) openIncs() []*inc {
	var out []*inc
	for _, i := range u.incs {
		if !i.closed {
			out = append(out, i)
		}
	}
	return out
}

// runCall relays c's frames: every period, one frame each way while an
// epoch is active, and a new epoch when none is and both users can call.
func (w *world) runCall(c *call) {
	pause(w.ctx, time.Duration(rand.Int64N(int64(w.cfg.period))))
	w.every(w.cfg.period, func() {
		w.mu.Lock()
		if !c.active {
			if c.paused || time.Since(c.endedAt) < 300*time.Millisecond {
				w.mu.Unlock()
				return
			}
			ia, ib := c.a.live(w), c.b.live(w)
			if ia == nil || ib == nil {
				w.mu.Unlock()
				return
			}
			c.epoch++
			c.st[0], c.st[1] = w.newStream("call", ia, ib), w.newStream("call", ib, ia)
			c.active = true
			w.n.epochs++
		}
		var outs []*stream
		var frames [][]byte
		for k, st := range c.st {
			if !st.ended && st.gone && time.Since(st.to.closedAt) > 5*time.Second {
				// Its client would wait for leave forever; the test gives up.
				w.n.giveUps++
				w.endStream(st, "peer gone, no leave within 5s", true)
				if c.st[0].ended && c.st[1].ended {
					c.active = false
					c.endedAt = time.Now()
				}
			}
			if !st.ended {
				outs = append(outs, st)
				frames = append(frames, st.next([]string{"offer", "answer"}[k]))
				w.n.framesSent++
			}
		}
		w.mu.Unlock()
		for k, st := range outs {
			_ = st.from.c.SendRaw(frames[k]) // a failed write: the connection is ending, recv sees it
		}
	})
}

// pauseCalls ends every epoch (by the test) and keeps new ones from
// starting; resumeCalls lets them start again.
func (w *world) pauseCalls() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.calls {
		c.paused = true
		w.endEpoch(c, "test", false)
	}
}

func (w *world) resumeCalls() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.calls {
		c.paused = false
	}
}

// drained reports nil once every ended stream has every frame delivered,
// or (ended abnormally) has seen no delivery for a second.
func (w *world) drained() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	pending := 0
	for _, st := range w.streams {
		if st.settled || !st.ended {
			continue
		}
		missing := 0
		var lastAt time.Time
		for _, dl := range st.dl {
			if len(dl) == 0 {
				missing++
			}
			for _, d := range dl {
				if d.at.After(lastAt) {
					lastAt = d.at
				}
			}
		}
		if missing == 0 {
			continue
		}
		if st.abnormal && time.Since(st.endAt) > time.Second && time.Since(lastAt) > time.Second {
			continue
		}
		pending++
	}
	if pending > 0 {
		return fmt.Errorf("%d streams still have frames in flight", pending)
	}
	return nil
}

// settle judges every ended stream that ended before cutoff: each frame
// delivered exactly once, or excused. w.mu is held.
//
// A frame that never arrived is excused (1) when no later frame of its
// stream arrived and the stream ended abnormally: the receiving or the
// sending connection closed, or either side heard leave or an error (the
// call ended under it), or (2) by an error frame its sender received after
// sending it: errors do not say which frame they are about, so each excuses
// one frame at most, the earliest unexcused one sent before it.
func (w *world) settle(cutoff time.Time) {
	var ready []*stream
	for _, st := range w.streams {
		if st.ended && !st.settled && st.endAt.Before(cutoff) {
			ready = append(ready, st)
		}
	}
	sort.Slice(ready, func(a, b int) bool { return ready[a].id < ready[b].id })
	for _, st := range ready {
		st.settled = true
		lastDelivered := 0 // to the connection the stream was meant for
		for n, dl := range st.dl {
			for _, d := range dl {
				if d.to == st.to {
					lastDelivered = n + 1
				}
			}
		}
		var needy []int // frames lost and not excused by the tail rule
		for k, dl := range st.dl {
			n := k + 1
			sentAt := st.sent[k]
			switch {
			case len(dl) == 0:
				if n > lastDelivered && (st.abnormal || st.gone) {
					w.n.lostExcusedTail++
				} else {
					needy = append(needy, k)
				}
			case len(dl) > 1:
				tos := map[*inc]bool{}
				for _, d := range dl {
					tos[d.to] = true
				}
				if len(tos) > 1 {
					var who []string
					for _, d := range dl {
						who = append(who, d.to.String())
					}
					w.violate("served twice", "frame %d of stream %d (%v to %s) reached %s", n, st.id, st.from, st.toName, strings.Join(who, " and "))
				}
			}
			for _, d := range dl {
				if !d.to.released.IsZero() && sentAt.After(d.to.released) {
					w.violate("delivered after release", "frame %d of stream %d from %v, sent %v after %v lost its name, reached it %v after",
						n, st.id, st.from, sentAt.Sub(d.to.released).Round(time.Millisecond), d.to, d.at.Sub(d.to.released).Round(time.Millisecond))
				}
				if !st.from.released.IsZero() && sentAt.After(st.from.released) {
					w.violate("relayed after release", "frame %d of %s stream %d from %v, written %v after its name was released, reached %v %v after the release",
						n, st.kind, st.id, st.from, sentAt.Sub(st.from.released).Round(time.Millisecond), d.to, d.at.Sub(st.from.released).Round(time.Millisecond))
					if st.kind == "probe" {
						w.n.impersonated++
					}
				}
			}
		}
		from := st.from
		for _, k := range needy {
			sentAt := st.sent[k]
			for from.errUsed < len(from.errs) && from.errs[from.errUsed].Before(sentAt) {
				from.errUsed++ // too early for this frame, and for every later one
			}
			if from.errUsed < len(from.errs) && from.errs[from.errUsed].Sub(sentAt) <= errWindow {
				from.errUsed++
				w.n.lostExcusedErr++
				continue
			}
			where := "in the middle"
			if k+1 > lastDelivered {
				where = "at the end (the stream ended " + st.endWhy + ")"
			}
			w.violate("lost silently", "frame %d of %d of stream %d (%v to %v), sent at %v, %s; its sender had %d error frames",
				k+1, len(st.sent), st.id, st.from, st.to, sentAt.Sub(w.began).Round(time.Millisecond), where, len(from.errs))
		}
		// The stream's memory is no longer needed.
		st.dl, st.sent = nil, nil
		delete(w.streams, st.id)
	}
}
