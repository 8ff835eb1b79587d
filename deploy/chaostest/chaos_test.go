package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/natsrtc/signal/services/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

var (
	soakFlag  = flag.Duration("chaos.soak", 0, "run the chaos test's faults in rounds for this long (a soak; default $SIGNAL_CHAOS_SOAK, else one round)")
	usersFlag = flag.Int("chaos.users", 1050, "logged-in users")
	callsFlag = flag.Int("chaos.calls", 110, "calls relaying frames (two users each, among the users)")
	leaseFlag = flag.Duration("chaos.lease", 20*time.Second, "the registries' -lease; the edges fence after 80% of it")
	keepFlag  = flag.Bool("chaos.keep", false, "keep the processes' logs and stores even when the test passes")
)

// config sizes a run.
type config struct {
	users, calls int
	probes       int           // names of the frozen edge taken over elsewhere
	period       time.Duration // between two frames of one direction of a call
	lease        time.Duration // registry -lease
	fence        time.Duration // edge -fence-after
	heartbeat    time.Duration // edge -heartbeat
	churnEvery   time.Duration // an idle user logs out and in again
	soak         time.Duration // 0: one round of faults
}

// TestChaos is the chaos run of issue 13 (item 3): the real binaries on
// the real 3-node cluster of deploy/nats, with 3 edges and 2 registries,
// 1,050 logged-in users, 110 calls each relaying a numbered frame every
// 150ms each way (trickling ICE, as a client does until it hears leave or
// an error), and idle users logging out and in again (5 a second). One
// round of faults, in sequence and overlapping:
//
//  1. kill -9 of an edge (then started again, as an orchestrator would),
//     with 20 quiet calls across it besides (an offer and an answer, then
//     silence: a call whose ICE is done), whose peers must hear leave;
//  2. kill -9 of the NATS node that leads the users stream and, 1s later,
//     of a registry (both started again later);
//  3. SIGSTOP of an edge for longer than the lease, while names it held are
//     taken over on another edge, then SIGCONT;
//  4. a NATS node restart (SIGTERM and start), and during it kill -9 of an
//     edge.
//
// The invariants, checked throughout and at the end (every breach is
// logged with what, who and when, and fails the test):
//
//   - No name is held by two live connections: for every name, at most one
//     open connection that got a login reply and no close frame, whose edge
//     runs (a frozen edge's connections are out of the count while it is
//     stopped and for closeBound after SIGCONT), and the users bucket names
//     its edge and instance (a disagreement may last agreeBound); each
//     edge's own count of users (edge.<id>.status, every 2s) agrees with
//     the clients' within a few for at most agreeBound. The bucket never
//     loses the name of a connection of a running edge.
//   - Every relayed frame arrives exactly once and in order, or its sender
//     got an error frame: frames carry their stream and number; a receiver
//     sees strictly increasing numbers; a frame that never arrives is
//     excused only when the call ended under it (no later frame arrived,
//     and a connection of the call closed, or either side heard leave or an
//     error) or by an error frame its sender received within errWindow
//     (one error excuses one frame). No frame is delivered to a connection
//     after the bucket released its name, none relayed from one whose name
//     was released, none stamped with another sender, none to another user.
//   - The peers of a killed edge's users hear leave (within 5s), and its
//     names are free within 1s of the kill, those of
//     the frozen edge within the lease and 3s (the registry's sweep, 1s,
//     and the release of some 660 names, 16 at a time), and once it runs
//     again the frozen edge closes every connection whose name it lost
//     within closeBound (with 4001; the cuts without a close frame that
//     its pinger makes are reported apart, TestReproPingerAfterStop).
//   - After the run the users bucket equals the union of the live edges'
//     sessions (the clients' view, and each edge's own count), and the
//     survivors' goroutines and descriptors have not grown.
//
// The figures the issue asks for are logged. The lease is 20s (the edges
// fence after 16s), not the 4s one might pick to make the frozen edge
// quick: after a kill -9 of a stream's leader the two other nodes elect
// another after nats-server's Raft election timeout, 4 to 9s, and it took
// 13s here once; an edge whose heartbeats fail for -fence-after closes
// every session, and a lease shorter than that releases every name.
//
// -chaos.soak=30m (or SIGNAL_CHAOS_SOAK=30m) runs rounds of the same faults
// until the time is up, everyone back home before each, then the same end
// checks (give go test a -timeout 5 minutes longer).
//
// It runs only with SIGNAL_CHAOS=1 (or a soak), not in CI: it finds
// breaches that are open bugs (repro_test.go reproduces most in seconds),
// and a kill -9 of a NATS node may silently lose the frames in flight
// through it (core NATS delivers at most once), which nothing in the
// system reports to their senders yet. It takes about 1.5 minutes here,
// with -race.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("a chaos run of the whole system: minutes")
	}
	if os.Getenv("SIGNAL_CHAOS") == "" && *soakFlag == 0 && os.Getenv("SIGNAL_CHAOS_SOAK") == "" {
		t.Skip("set SIGNAL_CHAOS=1 to run it (about 2 minutes), or SIGNAL_CHAOS_SOAK=30m for a soak")
	}
	cfg := config{
		users: *usersFlag, calls: *callsFlag, probes: 10,
		period: 150 * time.Millisecond, lease: *leaseFlag, heartbeat: 500 * time.Millisecond,
		churnEvery: 200 * time.Millisecond, soak: *soakFlag,
	}
	cfg.fence = cfg.lease * 4 / 5
	if cfg.soak == 0 {
		if v := os.Getenv("SIGNAL_CHAOS_SOAK"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("SIGNAL_CHAOS_SOAK=%q: %v", v, err)
			}
			cfg.soak = d
		}
	}
	if d, ok := t.Deadline(); ok && cfg.soak > 0 && time.Until(d) < cfg.soak+4*time.Minute {
		t.Fatalf("a soak of %v needs -timeout %v or more (the last round and the end checks come after it)", cfg.soak, (cfg.soak + 5*time.Minute).Round(time.Minute))
	}
	if cfg.users < 2*cfg.calls+cfg.probes+10 {
		t.Fatalf("%d users are too few for %d calls", cfg.users, cfg.calls)
	}
	// Runs last: every goroutine the test started is gone by then.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		httpClient.CloseIdleConnections()
		goleak.VerifyNone(t, before)
	})
	began := time.Now()
	bin := proctest.Binaries(t)
	built := time.Now()
	logDir, err := os.MkdirTemp("", "signal-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || *keepFlag {
			t.Logf("logs and stores kept in %s", logDir)
			return
		}
		_ = os.RemoveAll(logDir)
	})

	cl := startCluster(t, bin, logDir, loadCreds(t))
	for _, name := range []string{"registry-1", "registry-2"} {
		cl.addRegistry(name, "-lease", cfg.lease.String())
	}
	edgeFlags := []string{
		"-heartbeat", cfg.heartbeat.String(), "-fence-after", cfg.fence.String(),
		"-max-conns-per-ip", "-1", // every client is on 127.0.0.1
	}
	for i := range 3 {
		cl.addEdge(fmt.Sprintf("edge-%d", i+1), edgeFlags...)
	}
	w := newWorld(t, cl, cfg)
	for i, e := range cl.edges {
		st, err := cl.edgeStatus(e.id)
		if err != nil {
			t.Fatalf("%s status: %v", e.id, err)
		}
		w.edges[i].instance = st.Instance
	}
	kv, err := cl.js.KeyValue(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	w.mir = &mirror{kv: kv, entries: map[string]holder{}, onDelete: w.onDelete}
	r := &run{t: t, w: w, cl: cl, cfg: cfg}
	defer w.stop()
	w.goWorld(func() { w.mir.run(w.ctx) })
	if err := waitUntil(w.ctx, 30*time.Second, func() error {
		w.mir.mu.Lock()
		defer w.mir.mu.Unlock()
		if !w.mir.synced {
			return fmt.Errorf("the bucket watch has not delivered the initial values")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("build %v; 3 NATS nodes, 2 registries (-lease %v) and 3 edges (-heartbeat %v -fence-after %v) up in %v; logs in %s",
		built.Sub(began).Round(time.Millisecond), cfg.lease, cfg.heartbeat, cfg.fence, up.Sub(built).Round(time.Millisecond), logDir)

	// Everyone logs in, 32 at a time, then the calls start.
	w.addUsers()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, u := range w.users {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.login(u, u.home)
		}()
	}
	wg.Wait()
	for _, u := range w.users {
		w.goWorld(func() { w.life(u) })
	}
	t.Logf("%d users logged in in %v (%d login attempts failed)", len(w.users), time.Since(up).Round(time.Millisecond), w.n.loginFails)
	for _, c := range w.calls {
		w.goWorld(func() { w.runCall(c) })
	}
	w.goWorld(w.sampler)
	w.goWorld(w.statusSampler)
	w.goWorld(w.churner)
	w.goWorld(w.prober)
	w.goWorld(w.settler)
	r.waitCallsActive(20 * time.Second)
	pause(w.ctx, 3*time.Second)
	r.baseline = r.resources()
	chaosBegan := time.Now()

	// The faults.
	for round := 1; ; round++ {
		r.round(round)
		if cfg.soak == 0 || time.Since(chaosBegan) > cfg.soak || t.Failed() {
			break
		}
	}
	faultsDone := time.Now()
	r.finish()
	t.Logf("wall time %v (build %v, faults %v, end checks %v)", time.Since(began).Round(time.Second),
		built.Sub(began).Round(time.Second), faultsDone.Sub(chaosBegan).Round(time.Second), time.Since(faultsDone).Round(time.Second))
}

// run is the fault schedule and its figures.
type run struct {
	t        *testing.T
	w        *world
	cl       *cluster
	cfg      config
	baseline map[string][2]int // process -> goroutines (-1: not read), fds
	faults   []string
	figures  []string
	nodeTurn int
}

func (r *run) fault(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.faults = append(r.faults, fmt.Sprintf("%v %s", r.w.since(), s))
	r.t.Logf("%v fault: %s", r.w.since(), s)
}

func (r *run) figure(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.figures = append(r.figures, s)
	r.t.Logf("%v %s", r.w.since(), s)
}

// violateNow records a breach found by the schedule.
func (r *run) violateNow(kind, format string, args ...any) {
	r.w.mu.Lock()
	r.w.violate(kind, format, args...)
	r.w.mu.Unlock()
}

// round injects every fault once.
func (r *run) round(n int) {
	r.t.Logf("%v == round %d", r.w.since(), n)
	if n > 1 {
		r.rebalance()
	}
	r.killEdge(0, "")
	pause(r.w.ctx, 3*time.Second)
	r.killLeaderAndRegistry()
	pause(r.w.ctx, 3*time.Second)
	r.freezeEdge(1)
	pause(r.w.ctx, 3*time.Second)
	r.restartNodeAndKillEdge(0)
	pause(r.w.ctx, 3*time.Second)
}

// watchRelease starts timing the releases of the names edge ei's instance
// holds; w.mu is held.
func (w *world) watchRelease(ei int) *releaseWatch {
	rw := &releaseWatch{edge: ei, inst: w.edges[ei].instance, held: map[string]bool{}, freed: map[string]time.Time{}}
	for tok, h := range w.mir.snapshot() {
		if h.Instance == rw.inst {
			rw.held[tok] = true
		}
	}
	w.watches = append(w.watches, rw)
	return rw
}

func (w *world) unwatch(rw *releaseWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches = slices.DeleteFunc(w.watches, func(x *releaseWatch) bool { return x == rw })
}

// killEdge kills edge ei with -9, measures how soon its names are free and
// its users' peers hear leave, and starts it again.
func (r *run) killEdge(ei int, during string) {
	w, e := r.w, r.cl.edges[ei]
	w.mu.Lock()
	rw := w.watchRelease(ei)
	var peers []*inc
	partner := map[*inc]*inc{}
	for _, c := range w.calls {
		if !c.active {
			continue
		}
		for _, st := range c.st {
			if st.to.edge == ei && st.from.edge != ei && !st.from.closed && !st.ended {
				st.from.leaveAt = time.Time{}
				peers = append(peers, st.from)
				partner[st.from] = st.to
			}
		}
	}
	w.mu.Unlock()
	quiet, victims := r.quietCalls(ei, 20)
	w.mu.Lock()
	for _, q := range quiet {
		q.leaveAt = time.Time{}
	}
	w.edges[ei].mode = edgeDown
	rw.at = time.Now()
	w.mu.Unlock()
	e.p.kill()
	r.fault("kill -9 %s%s (%d names; %d peers on other edges in trickling calls, %d in quiet calls)", e.id, during, len(rw.held), len(peers), len(quiet))

	err := r.pollFree(rw, 3*r.cfg.lease)
	w.mu.Lock()
	frees := rw.times()
	if err != nil {
		w.violate("names not freed", "kill -9 of %s: %v", e.id, err)
	} else if late := rw.later(time.Second); len(late) > 0 {
		w.violate("names freed late", "kill -9 of %s%s: %d of its %d names were free only later than 1s after the kill: %s", e.id, during, len(late), len(rw.held), strings.Join(late, ", "))
	}
	w.mu.Unlock()
	r.figure("kill -9 %s%s -> its %d names free in the bucket after %s", e.id, during, len(rw.held), quantiles(frees))
	_ = waitUntil(w.ctx, 5*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, p := range append(append([]*inc{}, peers...), quiet...) {
			if p.leaveAt.IsZero() && !p.closed {
				return fmt.Errorf("%v has not heard leave", p)
			}
		}
		return nil
	})
	w.mu.Lock()
	var ds, qs, told []time.Duration
	missing := 0
	for _, p := range peers {
		for _, at := range p.errs {
			if at.After(rw.at) {
				told = append(told, at.Sub(rw.at))
				break
			}
		}
		switch {
		case !p.leaveAt.IsZero():
			ds = append(ds, p.leaveAt.Sub(rw.at))
		case !p.closed:
			missing++
			q := partner[p]
			freed, ok := rw.freed[q.u.name]
			w.violate("no leave", "%v's peer %v was on %s, killed; it heard no leave within 5s (the peer's name was free %v after the kill: %v)",
				p, q, e.id, freed.Sub(rw.at).Round(time.Millisecond), ok)
		}
	}
	for _, q := range quiet {
		switch {
		case !q.leaveAt.IsZero():
			qs = append(qs, q.leaveAt.Sub(rw.at))
		case !q.closed:
			w.violate("no leave", "%v was in a quiet call with a user of %s, killed; it heard no leave within 5s", q, e.id)
		}
	}
	for _, q := range append(quiet, victims...) {
		q.u.churn = true
	}
	w.mu.Unlock()
	r.figure("kill -9 %s%s -> quiet calls' peers hear leave after %s (%d of %d)", e.id, during, quantiles(qs), len(qs), len(quiet))
	r.figure("kill -9 %s%s -> trickling calls' peers hear leave after %s (%d of %d); their first error frame (the candidate they sent meanwhile) after %s",
		e.id, during, quantiles(ds), len(ds), len(peers), quantiles(told))
	w.unwatch(rw)

	pause(w.ctx, 2*time.Second) // an orchestrator's restart delay
	r.startEdge(ei)
}

// pollFree reads rw's held names from the bucket (direct gets, 16 at a
// time, every 50ms) until each is gone or held by another instance, and
// records when each was first seen free (the bucket watch records it too:
// the earlier of the two counts).
func (r *run) pollFree(rw *releaseWatch, within time.Duration) error {
	w := r.w
	err := waitUntil(w.ctx, within, func() error {
		w.mu.Lock()
		var pending []string
		for tok := range rw.held {
			if _, ok := rw.freed[tok]; !ok {
				pending = append(pending, tok)
			}
		}
		w.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		sem := make(chan struct{}, 16)
		var wg sync.WaitGroup
		for _, tok := range pending {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(w.ctx, time.Second)
				defer cancel()
				e, err := w.mir.kv.Get(ctx, tok)
				now := time.Now()
				free := errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
				if err == nil {
					var h holder
					free = json.Unmarshal(e.Value(), &h) == nil && h.Instance != rw.inst
				}
				if free {
					w.mu.Lock()
					if _, ok := rw.freed[tok]; !ok {
						rw.freed[tok] = now
					}
					w.mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return fmt.Errorf("%d of %d names still held", len(pending), len(rw.held))
	})
	if err != nil {
		return err
	}
	// The watch gives the bucket's own times: let it catch up (3s at
	// most), so that the figures do not count the polls' delay.
	_ = waitUntil(w.ctx, 3*time.Second, func() error {
		for tok := range rw.held {
			if h, ok := w.mir.get(tok); ok && h.Instance == rw.inst {
				return fmt.Errorf("the watch has not seen %s go", tok)
			}
		}
		return nil
	})
	return nil
}

// quietCalls sets up to n calls between idle users of edge ei and idle
// users elsewhere that are quiet: an offer and an answer, then nothing (a
// call whose ICE is done). It returns the connections elsewhere and those
// on ei, once both sides have received their frame; they are kept from
// churning until killEdge is done with them.
func (r *run) quietCalls(ei, n int) (there, here []*inc) {
	w := r.w
	w.mu.Lock()
	for _, u := range w.users {
		i := u.live(w)
		if i == nil || !u.churn {
			continue
		}
		switch {
		case i.edge == ei && len(here) < n:
			here = append(here, i)
		case i.edge != ei && len(there) < n:
			there = append(there, i)
		default:
			continue
		}
		u.churn = false
	}
	k := min(len(here), len(there))
	for _, i := range append(here[k:], there[k:]...) {
		i.u.churn = true
	}
	here, there = here[:k], there[:k]
	base := make([]int, k)
	for j := range k {
		base[j] = there[j].quiet
	}
	w.mu.Unlock()
	for j := range k {
		_ = there[j].c.SendRaw([]byte(`{"type":"offer","name":"` + here[j].u.name + `","offer":{"q":1}}`))
		_ = here[j].c.SendRaw([]byte(`{"type":"answer","name":"` + there[j].u.name + `","answer":{"q":1}}`))
	}
	err := waitUntil(w.ctx, 5*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for j := range k {
			if there[j].quiet == base[j] && !there[j].closed && !here[j].closed {
				return fmt.Errorf("%v has not received its answer", there[j])
			}
		}
		return nil
	})
	if err != nil {
		r.t.Logf("quiet calls: %v", err)
	}
	return there, here
}

// startEdge starts edge ei again (a new instance with the same id) and
// lets users log in there.
func (r *run) startEdge(ei int) {
	e := r.cl.edges[ei]
	t0 := time.Now()
	if err := r.cl.startService(e); err != nil {
		r.t.Fatalf("restart %s: %v", e.id, err)
	}
	st, err := r.cl.edgeStatus(e.id)
	if err != nil {
		r.t.Fatalf("%s status: %v", e.id, err)
	}
	r.w.mu.Lock()
	r.w.edges[ei] = edgeState{mode: edgeUp, instance: st.Instance}
	r.w.mu.Unlock()
	r.t.Logf("%v %s started again (instance %s) in %v", r.w.since(), e.id, st.Instance, time.Since(t0).Round(time.Millisecond))
}

// killLeaderAndRegistry kills the node that leads the users stream and,
// overlapping, a registry; both are started again once a new leader is
// elected.
func (r *run) killLeaderAndRegistry() {
	w, cl := r.w, r.cl
	ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
	leader, _, err := cl.streamLeader(ctx, "KV_users")
	edgesLeader, _, _ := cl.streamLeader(ctx, "KV_edges")
	cancel()
	if err != nil || cl.node(leader) == nil {
		r.t.Fatalf("KV_users leader: %q %v", leader, err)
	}
	n := cl.node(leader)
	w.mu.Lock()
	w.loginMark, w.firstLogin = time.Now(), time.Time{}
	w.mu.Unlock()
	at := time.Now()
	n.p.kill()
	r.fault("kill -9 NATS %s, the users stream's leader (the edges stream's: %s)", leader, edgesLeader)
	pause(w.ctx, time.Second)
	reg := cl.regs[0]
	reg.p.kill()
	r.fault("kill -9 %s", reg.name)

	err = waitUntil(w.ctx, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		defer cancel()
		l, _, err := cl.streamLeader(ctx, "KV_users")
		if err != nil {
			return err
		}
		if l == "" || l == leader {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	if err != nil {
		r.violateNow("no new leader", "KV_users after the kill of %s: %v", leader, err)
	}
	r.figure("kill -9 NATS %s -> KV_users has a new leader after %v", leader, time.Since(at).Round(time.Millisecond))
	_ = waitUntil(w.ctx, 30*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.firstLogin.IsZero() {
			return fmt.Errorf("no login yet")
		}
		return nil
	})
	w.mu.Lock()
	first := w.firstLogin
	w.loginMark = time.Time{}
	w.mu.Unlock()
	if !first.IsZero() {
		r.figure("kill -9 NATS %s -> first successful login %v after it", leader, first.Sub(at).Round(time.Millisecond))
	}
	if err := r.cl.startService(reg); err != nil {
		r.t.Fatalf("restart %s: %v", reg.name, err)
	}
	r.t.Logf("%v %s started again", w.since(), reg.name)
	pause(w.ctx, time.Until(at.Add(12*time.Second)))
	if err := n.p.start(); err != nil {
		r.t.Fatal(err)
	}
	t0 := time.Now()
	err = waitUntil(w.ctx, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		defer cancel()
		return errors.Join(cl.streamCurrent(ctx, "KV_users"), cl.streamCurrent(ctx, "KV_edges"))
	})
	if err != nil {
		r.violateNow("node not current", "%s after its restart: %v", leader, err)
	}
	r.figure("NATS %s started again; the buckets' replicas current after %v", leader, time.Since(t0).Round(time.Millisecond))
}

// freezeEdge stops edge ei (SIGSTOP) for longer than the lease: its names
// must be free within the lease, some of them are taken over on another
// edge, and once continued it must close every connection whose name it
// lost. Probe streams check that nothing reaches the old connections, or
// comes from them, after their names were released.
func (r *run) freezeEdge(ei int) {
	w, e := r.w, r.cl.edges[ei]
	other := (ei + 1) % len(r.cl.edges)
	w.mu.Lock()
	var frozen, probes []*inc
	for _, u := range w.users {
		for _, i := range u.openIncs() {
			if i.edge == ei {
				frozen = append(frozen, i)
				if u.churn && len(probes) < r.cfg.probes {
					u.churn = false
					probes = append(probes, i)
				}
			}
		}
	}
	var prober *inc
	for _, u := range w.users {
		if i := u.live(w); i != nil && u.churn && i.edge == other {
			u.churn = false
			prober = i
			break
		}
	}
	if prober == nil || len(probes) == 0 {
		w.mu.Unlock()
		r.t.Fatalf("no probe users on %s or prober on edge %d", e.id, other+1)
	}
	rw := w.watchRelease(ei)
	w.edges[ei].mode = edgeFrozen
	rw.at = time.Now()
	// From each old connection to the prober: what it writes while frozen
	// must not arrive once its name was released.
	for _, p := range probes {
		w.probes = append(w.probes, w.newStream("probe", p, prober))
	}
	w.mu.Unlock()
	if err := e.p.signal(syscall.SIGSTOP); err != nil {
		r.t.Fatal(err)
	}
	r.fault("SIGSTOP %s (%d connections, %d names; %d of them to be taken over on %s)", e.id, len(frozen), len(rw.held), len(probes), r.cl.edges[other].id)

	// Takers: log the probe names in on the other edge as soon as they are
	// free; the prober then sends to each.
	taken := make(chan time.Duration, len(probes))
	for _, p := range probes {
		w.goWorld(func() {
			for w.ctx.Err() == nil {
				w.mu.Lock()
				inst := w.edges[other].instance
				up := w.edges[other].mode == edgeUp
				w.mu.Unlock()
				if up {
					if ni := w.tryLogin(p.u, other, inst); ni != nil {
						w.mu.Lock()
						w.probes = append(w.probes, w.newStream("probe", prober, ni))
						w.mu.Unlock()
						taken <- ni.loginAt.Sub(rw.at)
						return
					}
				}
				pause(w.ctx, 250*time.Millisecond)
			}
		})
	}
	// The lease, the registry's sweep (1s), and the release itself: 16
	// names at a time, about 2s for 660 names here.
	bound := r.cfg.lease + 3*time.Second
	err := r.pollFree(rw, bound+5*time.Second)
	w.mu.Lock()
	frees := rw.times()
	if err != nil {
		w.violate("names not freed", "SIGSTOP of %s: %v", e.id, err)
	} else if late := rw.later(bound); len(late) > 0 {
		w.violate("names freed late", "SIGSTOP of %s: %d of its %d names were free only later than %v after the stop: %s", e.id, len(late), len(rw.held), bound, strings.Join(late, ", "))
	}
	w.mu.Unlock()
	r.figure("SIGSTOP %s -> its %d names free in the bucket after %s (lease %v)", e.id, len(rw.held), quantiles(frees), r.cfg.lease)
	var takes []time.Duration
	for range probes {
		select {
		case d := <-taken:
			takes = append(takes, d)
		case <-time.After(time.Until(rw.at.Add(bound + 5*time.Second))):
		}
	}
	if len(takes) < len(probes) {
		r.violateNow("takeover failed", "only %d of %d names of the frozen %s could be taken on another edge", len(takes), len(probes), e.id)
	}
	r.figure("SIGSTOP %s -> %d of its names logged in on %s after %s", e.id, len(takes), r.cl.edges[other].id, quantiles(takes))
	w.unwatch(rw)

	// Frozen for longer than the lease, and the takeovers have had a
	// moment of traffic.
	pause(w.ctx, time.Until(rw.at.Add(r.cfg.lease+3*time.Second)))
	if err := e.p.signal(syscall.SIGCONT); err != nil {
		r.t.Fatal(err)
	}
	w.mu.Lock()
	cont := time.Now()
	w.edges[ei].mode = edgeUp
	w.edges[ei].contAt = cont
	w.mu.Unlock()
	r.fault("SIGCONT %s after %v", e.id, cont.Sub(rw.at).Round(time.Millisecond))
	_ = waitUntil(w.ctx, closeBound+2*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, i := range frozen {
			if !i.closed {
				return fmt.Errorf("%v still open", i)
			}
		}
		return nil
	})
	w.mu.Lock()
	var closes []time.Duration
	codes := map[string]int{}
	for _, i := range frozen {
		switch {
		case !i.closed:
			w.violate("frozen edge kept a connection", "%v still open %v after SIGCONT (its name released %v after the stop)", i, time.Since(cont).Round(time.Millisecond), relTo(i.released, rw.at))
		case i.byTest:
		default:
			// 4001 is the post-partition check's close (fenced, or the
			// name released). A cut without a close frame is the edge's
			// pinger, which counts the time it was stopped as the
			// client's silence: it closes too, but the client cannot
			// tell why (reported, not counted as a breach).
			codes[fmt.Sprintf("%d %s", i.code, i.reason)]++
			closes = append(closes, i.closedAt.Sub(cont))
			if i.code != 4001 && i.code != 0 {
				w.violate("frozen edge closed with the wrong code", "%v closed with %d %q, want 4001", i, i.code, i.reason)
			}
			if i.closedAt.Sub(cont) > closeBound {
				w.violate("frozen edge closed late", "%v closed %v after SIGCONT", i, i.closedAt.Sub(cont).Round(time.Millisecond))
			}
		}
	}
	w.mu.Unlock()
	r.figure("SIGCONT %s -> its %d connections closed after %s: %s", e.id, len(closes), quantiles(closes), sortedCounts(codes))

	// The probes run a little longer, then stop.
	pause(w.ctx, time.Until(cont.Add(2*time.Second)))
	w.mu.Lock()
	for _, st := range w.probes {
		w.endStream(st, "test", false)
	}
	w.probes = nil
	for _, p := range probes {
		p.u.churn = true
	}
	prober.u.churn = true
	w.mu.Unlock()
}

// restartNodeAndKillEdge restarts a NATS node (SIGTERM, then start) and
// kills edge ei while the node is away.
func (r *run) restartNodeAndKillEdge(ei int) {
	w, cl := r.w, r.cl
	n := cl.nodes[r.nodeTurn%len(cl.nodes)]
	r.nodeTurn++
	at := time.Now()
	r.fault("SIGTERM NATS %s (restart)", n.name)
	if err := n.p.term(30 * time.Second); err != nil {
		r.violateNow("node stop", "%v", err)
	}
	r.t.Logf("%v NATS %s stopped in %v", w.since(), n.name, time.Since(at).Round(time.Millisecond))
	r.killEdge(ei, " during the restart of NATS "+n.name)
	if err := n.p.start(); err != nil {
		r.t.Fatal(err)
	}
	t0 := time.Now()
	err := waitUntil(w.ctx, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(w.ctx, time.Second)
		defer cancel()
		return errors.Join(cl.streamCurrent(ctx, "KV_users"), cl.streamCurrent(ctx, "KV_edges"))
	})
	if err != nil {
		r.violateNow("node not current", "%s after its restart: %v", n.name, err)
	}
	r.figure("NATS %s restarted; the buckets' replicas current after %v (%v after its SIGTERM)", n.name, time.Since(t0).Round(time.Millisecond), time.Since(at).Round(time.Millisecond))
}

// waitCallsActive waits until every call relays (a breach if not).
func (r *run) waitCallsActive(within time.Duration) {
	w := r.w
	err := waitUntil(w.ctx, within, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, c := range w.calls {
			if !c.active {
				n++
			}
		}
		if n > 0 {
			return fmt.Errorf("%d calls not relaying", n)
		}
		return nil
	})
	if err != nil {
		r.violateNow("calls", "not every call relays again within %v: %v", within, err)
	}
}

// resources reads every running process's goroutines (edges, registries:
// go_goroutines) and descriptors (/proc).
func (r *run) resources() map[string][2]int {
	out := map[string][2]int{}
	for _, s := range append(append([]*service{}, r.cl.edges...), r.cl.regs...) {
		g, err := goroutines(s)
		if err != nil {
			g = -1
		}
		f, _ := s.p.fds()
		out[s.name] = [2]int{g, f}
	}
	for _, n := range r.cl.nodes {
		f, _ := n.p.fds()
		out["nats-"+n.name] = [2]int{-1, f}
	}
	return out
}

// survivors are the processes that ran the whole time (started once).
func (r *run) survivors() map[string]*proc {
	out := map[string]*proc{}
	for _, s := range append(append([]*service{}, r.cl.edges...), r.cl.regs...) {
		if s.p.startCount() == 1 {
			out[s.name] = s.p
		}
	}
	for _, n := range r.cl.nodes {
		if n.p.startCount() == 1 {
			out["nats-"+n.name] = n.p
		}
	}
	return out
}

// rebalance brings every user back to its home edge, as at the start
// (calls paused and drained first, so that the moves cost no frame): the
// survivors' resources then compare like with like, and in a soak every
// round's faults hit full edges. Churn pauses meanwhile.
func (r *run) rebalance() {
	w := r.w
	w.mu.Lock()
	churn := w.noChurn
	w.noChurn = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.noChurn = churn
		w.mu.Unlock()
	}()
	w.pauseCalls()
	if err := waitUntil(w.ctx, 10*time.Second, w.drained); err != nil {
		r.t.Logf("before the rebalance: %v", err)
	}
	w.mu.Lock()
	var moves []*inc
	for _, u := range w.users {
		incs := u.openIncs()
		for _, i := range incs {
			if i.edge != u.home || len(incs) > 1 {
				i.byTest = true
				moves = append(moves, i)
			}
		}
	}
	w.mu.Unlock()
	for _, i := range moves {
		w.goWorld(func() { _ = i.c.Close() })
	}
	err := waitUntil(w.ctx, 20*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, u := range w.users {
			incs := u.openIncs()
			if len(incs) != 1 || incs[0].edge != u.home {
				return fmt.Errorf("%s has %d open connections, not one on edge-%d; its login attempts: %s", u.name, len(incs), u.home+1, w.history(u))
			}
		}
		return nil
	})
	if err != nil {
		r.violateNow("rebalance", "not every user is back home within 20s: %v", err)
	}
	r.t.Logf("%v %d connections moved back to their home edges", w.since(), len(moves))
	w.resumeCalls()
	r.waitCallsActive(20 * time.Second)
}

// finish brings everyone back home, measures, and checks the end state.
func (r *run) finish() {
	w := r.w
	w.mu.Lock()
	w.noChurn = true
	w.mu.Unlock()
	r.rebalance()
	t := r.t

	// Resources: the survivors, in the same state as at the baseline.
	var end map[string][2]int
	grown := func() []string {
		end = r.resources()
		var out []string
		for name := range r.survivors() {
			b, e := r.baseline[name], end[name]
			if e[0] > b[0]+b[0]/10+20 {
				out = append(out, fmt.Sprintf("%s goroutines %d -> %d", name, b[0], e[0]))
			}
			if e[1] > b[1]+10 {
				out = append(out, fmt.Sprintf("%s descriptors %d -> %d", name, b[1], e[1]))
			}
		}
		return out
	}
	_ = waitUntil(w.ctx, 15*time.Second, func() error {
		if g := grown(); len(g) > 0 {
			return fmt.Errorf("%s", strings.Join(g, "; "))
		}
		return nil
	})
	for _, g := range grown() {
		r.violateNow("resources grew", "%s", g)
	}
	var names []string
	for name := range r.baseline {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b, e := r.baseline[name], end[name]
		surv := "restarted"
		if r.survivors()[name] != nil {
			surv = "survivor"
		}
		r.figure("resources %-10s %-9s goroutines %4d -> %4d, descriptors %4d -> %4d", name, surv, b[0], e[0], b[1], e[1])
	}

	// The end state: the bucket is the union of the edges' sessions.
	w.pauseCalls()
	if err := waitUntil(w.ctx, 10*time.Second, w.drained); err != nil {
		t.Logf("at the end: %v", err)
	}
	var diff []string
	err := waitUntil(w.ctx, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		defer cancel()
		b, err := readBucket(ctx, w.mir.kv)
		if err != nil {
			return err
		}
		diff = r.compare(b)
		if len(diff) > 0 {
			return fmt.Errorf("%d differences", len(diff))
		}
		return nil
	})
	if err != nil {
		for k, d := range diff {
			if k < 20 {
				r.violateNow("end state", "%s", d)
			}
		}
		r.violateNow("end state", "the bucket is not the union of the edges' sessions: %v", err)
	}

	// Stop the clients, judge every frame, report.
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.settle(time.Now().Add(time.Hour))
	r.report()
}

// compare lists the differences between the bucket b, the clients' open
// connections and each edge's status.
func (r *run) compare(b map[string]holder) []string {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	var diff []string
	perEdge := make([]int64, len(r.cl.edges))
	for _, u := range w.users {
		incs := u.openIncs()
		h, ok := b[u.name]
		if len(incs) != 1 {
			diff = append(diff, fmt.Sprintf("%s: %d open connections", u.name, len(incs)))
			continue
		}
		i := incs[0]
		perEdge[i.edge]++
		if !ok || h.Edge != r.cl.edges[i.edge].id || !i.owns(h) {
			diff = append(diff, fmt.Sprintf("%s: logged in as %v (instance %s), the bucket says %+v (present %v)", u.name, i, i.inst, h, ok))
		}
	}
	for tok, h := range b {
		if w.byName[tok] == nil {
			diff = append(diff, fmt.Sprintf("the bucket holds %s (%+v), no client of the test", tok, h))
		}
	}
	for k, e := range r.cl.edges {
		st, err := r.cl.edgeStatus(e.id)
		switch {
		case err != nil:
			diff = append(diff, fmt.Sprintf("%s status: %v", e.id, err))
		case st.Users != perEdge[k] || st.Connections != perEdge[k]:
			diff = append(diff, fmt.Sprintf("%s says %d users on %d connections; the clients hold %d there", e.id, st.Users, st.Connections, perEdge[k]))
		case st.Instance != w.edges[k].instance:
			diff = append(diff, fmt.Sprintf("%s runs instance %s, the test knows %s", e.id, st.Instance, w.edges[k].instance))
		}
	}
	return diff
}

// report logs the figures and the breaches; w.mu is held.
func (r *run) report() {
	w, t := r.w, r.t
	t.Logf("== faults injected: %d", len(r.faults))
	for _, f := range r.faults {
		t.Logf("   %s", f)
	}
	t.Logf("== figures")
	for _, f := range r.figures {
		t.Logf("   %s", f)
	}
	n := w.n
	t.Logf("== users %d (peak open connections %d), calls %d (%d epochs), logins %d (%d attempts failed, %d dials failed), idle users churned %d",
		len(w.users), n.maxOpen, len(w.calls), n.epochs, n.logins, n.loginFails, n.dialFails, n.churned)
	t.Logf("   login failures: %v", sortedCounts(n.loginFailWhy))
	t.Logf("   largest difference between an edge's user count and the clients' connections there, sampled every 2s: %d", n.maxStatusDiff)
	t.Logf("   closes seen by clients: %v", sortedCounts(n.closes))
	t.Logf("   error frames: %v", sortedCounts(n.errorFrames))
	t.Logf("== frames sent %d, delivered %d; lost but excused: %d as the call ended under them, %d by an error frame to their sender; %d reached a later connection of their target; %d streams given up (peer gone, no leave within 5s)",
		n.framesSent, n.framesDelivered, n.lostExcusedTail, n.lostExcusedErr, n.strays, n.giveUps)
	total := 0
	for _, c := range w.violKinds {
		total += c
	}
	t.Logf("   of the frames relayed after their sender's name was released, %d were app messages stamped with a name another connection held by then (the takeovers)", n.impersonated)
	r.cl.obsMu.Lock()
	t.Logf("== the observer connection's errors: %v", sortedCounts(r.cl.obsErrs))
	r.cl.obsMu.Unlock()
	t.Logf("== permission violations the NATS nodes logged (role, kind, subject): %v", sortedCounts(r.cl.violations()))
	t.Logf("== invariant violations: %d %v", total, sortedCounts(w.violKinds))
	for _, v := range w.viols {
		t.Logf("   %v %s: %s", v.at, v.kind, v.what)
	}
	if total > 0 {
		t.Errorf("%d invariant violations", total)
	}
}

// stop ends every goroutine of the world and closes its connections.
func (w *world) stop() {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, u := range w.users {
		for _, i := range u.incs {
			_ = i.c.Abort()
		}
	}
}

// every calls f every d until the world stops.
func (w *world) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// sampler checks the names every 250ms.
func (w *world) sampler() {
	w.every(250*time.Millisecond, func() {
		w.mu.Lock()
		w.sample()
		w.mu.Unlock()
	})
}

// settler judges the streams that ended a while ago, so that a soak's
// memory stays bounded.
func (w *world) settler() {
	w.every(5*time.Second, func() {
		w.mu.Lock()
		w.settle(time.Now().Add(-2 * w.cfg.lease))
		w.mu.Unlock()
	})
}

// churner makes an idle user log out (a close frame, or 1 in 5 times a
// dropped socket) every churnEvery; it logs in again by itself.
func (w *world) churner() {
	w.every(w.cfg.churnEvery, func() {
		w.mu.Lock()
		if w.noChurn {
			w.mu.Unlock()
			return
		}
		var pick *inc
		for range 10 {
			u := w.users[rand.IntN(len(w.users))]
			if i := u.live(w); u.churn && i != nil {
				pick = i
				break
			}
		}
		if pick != nil {
			pick.byTest = true
			w.n.churned++
		}
		w.mu.Unlock()
		if pick != nil {
			if rand.IntN(5) == 0 {
				_ = pick.c.Abort()
			} else {
				w.goWorld(func() { _ = pick.c.Close() })
			}
		}
	})
}

// prober sends the next frame of every probe stream every 200ms.
func (w *world) prober() {
	w.every(200*time.Millisecond, func() {
		type out struct {
			i *inc
			b []byte
		}
		var outs []out
		w.mu.Lock()
		for _, st := range w.probes {
			if !st.ended {
				outs = append(outs, out{st.from, st.next("")})
				w.n.framesSent++
			}
		}
		w.mu.Unlock()
		for _, o := range outs {
			_ = o.i.c.SendRaw(o.b)
		}
	})
}

// quantiles formats the median and the maximum of ds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	slices.Sort(ds)
	return fmt.Sprintf("p50 %v, max %v", ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: %d", k, m[k])
	}
	return "{" + b.String() + "}"
}
