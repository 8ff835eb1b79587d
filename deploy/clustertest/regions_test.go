package clustertest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/client"
)

// regionDelay is the one-way delay of the link between the regions: a 40 ms
// round trip, about Frankfurt to Virginia's half.
const regionDelay = 20 * time.Millisecond

// regionCut is how long the link between the regions stays cut. It must
// stay well inside the registry's -lease (30 s here): a west edge cannot
// heartbeat its lease into the edges bucket, in east, while the link is
// down (deploy/README.md, "Regions", says what a longer cut does).
const regionCut = 5 * time.Second

// heartbeatEvery is the edges' lease heartbeat (edge.DefaultHeartbeat,
// not set here): what a west edge sends to east anyway, a KV put and its
// acknowledgement, so the bound on what an in-region call may cross.
const heartbeatEvery = 2500 * time.Millisecond

// TestRegions runs the two-region super-cluster of deploy/regions on this
// machine, from the checked-in local-*.conf: east, the home region (3 nodes
// with JetStream, the registry, the buckets placed there with -kv-cluster
// east), west (2 nodes, no JetStream), a leaf-node site hanging off east,
// and a link that adds regionDelay each way in front of every gateway port.
// Edges: 2 in east, 2 in west, 1 on the site. It shows that
//
//   - the buckets sit in east, and the gateways are interest-only and all
//     go through the links;
//   - a name taken in one region is refused in the other, and of two
//     logins racing for a name from both regions exactly one wins;
//   - a call between two users of one region crosses no gateway: the
//     SIGNAL account's gateway counters (/accstatz) move by no more than
//     the west edges' lease heartbeats while hundreds of frames are
//     relayed, and by two messages per round trip in a cross-region call;
//   - cutting the link: calls inside each region (and between the site and
//     east) go on, cross-region relays get error frames, logins in west
//     fail with a clear error and those in east and on the site go on; when
//     the link is back, west logs in again and cross-region calls resume;
//   - no name is ever held twice: refused across regions before, during
//     and after the cut, every held name keeps its entry (same revision),
//     none is released, and at the end the users bucket holds exactly the
//     names of the connections still open.
//
// It logs the figures deploy/README.md quotes: login latency per region,
// relay round trips inside each region, across, and site to hub, what the
// cut did, and its own wall time.
func TestRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two NATS clusters joined by gateways, a leaf node, a registry and edges")
	}
	began := time.Now()
	bin := binaries(t)
	cr := loadCreds(t)
	built := time.Now()
	rg := startRegions(t, bin, cr, 3, 2, regionDelay)
	reg := rg.startService("registry-1", "registry", rg.urls("east"),
		"-replicas", "3", "-kv-cluster", "east", "-lease", "30s", "-log-level", "debug")
	// Each edge gets one node of its region, so that a call between the
	// two edges of a region crosses a route (and must cross no gateway).
	edges := map[string]*service{}
	for _, node := range []string{"east-1", "east-2", "west-1", "west-2", "site-1"} {
		edges[node] = rg.startService("edge-"+node, "edge", rg.byName[node].clientURL)
	}
	ws := func(node string) string { return edges[node].ws }
	t.Logf("build %v; two regions, the site, the registry and 5 edges up in %v",
		built.Sub(began).Round(time.Millisecond), time.Since(built).Round(time.Millisecond))

	// The buckets are in east, seen from west (the observer connects to
	// west-1: its JetStream requests cross the gateway).
	obs, err := nats.Connect(rg.byName["west-1"].clientURL, nats.UserInfo("observer", cr.Passwords["observer"]),
		nats.Name("clustertest-observer-west"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obs.Close)
	js, err := jetstream.New(obs)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{"KV_users", "KV_edges"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, stream)
		var si *jetstream.StreamInfo
		if err == nil {
			si, err = s.Info(ctx)
		}
		cancel()
		if err != nil {
			t.Fatalf("%s from west: %v", stream, err)
		}
		if si.Config.Placement == nil || si.Config.Placement.Cluster != "east" || si.Cluster == nil || si.Cluster.Name != "east" ||
			si.Config.Replicas != 3 || len(si.Cluster.Replicas) != 2 {
			t.Fatalf("%s: placement %+v, cluster %+v, replicas %d; want 3 replicas placed in east", stream, si.Config.Placement, si.Cluster, si.Config.Replicas)
		}
	}
	for _, n := range rg.region("west") {
		g, err := rg.gatewayz(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("regions: %s's gateway to east: rtt %s (the link adds %v)", n.name, g.Outbound["east"].Conn.RTT, 2*regionDelay)
	}

	// Login latency in each region: a fresh connection per login, from the
	// login frame to its reply (a west login is a registry request that
	// crosses the gateway and back; a site login goes to the hub).
	latency := map[string][]time.Duration{}
	for _, node := range []string{"east-1", "west-1", "site-1"} {
		region := rg.byName[node].region
		for i := range 15 {
			c, r := tryLogin(t, ws(node), fmt.Sprintf("lat-%s-%d", region, i), 10*time.Second)
			if r.Kind != "ok" {
				t.Fatalf("login in %s: %v", region, r)
			}
			latency[region] = append(latency[region], r.Took)
			_ = c.Close()
		}
	}
	for _, region := range []string{"east", "west", "site"} {
		p := percentiles(latency[region], 50, 90, 100)
		t.Logf("regions: login latency in %-4s p50 %s  p90 %s  max %s  (%d logins)", region, ms(p[0]), ms(p[1]), ms(p[2]), len(latency[region]))
	}

	// The users of the calls, and who holds which name.
	held := map[string]*client.Client{}
	home := map[string]string{} // name -> the node of its edge
	for name, node := range map[string]string{
		"alice": "east-1", "bob": "east-2", // a call inside east
		"carol": "west-1", "dave": "west-2", // a call inside west
		"erin": "east-1", "frank": "west-2", // a call across
		"gina": "site-1", "ian": "east-2", // the site and its hub
	} {
		held[name] = mustLogin(t, ws(node), name)
		home[name] = node
	}
	otherRegion := map[string]string{"east-1": "west-1", "east-2": "west-2", "west-1": "east-1", "west-2": "east-2", "site-1": "west-1"}

	// A name taken in one region is refused in the other.
	for name, node := range home {
		c, r := tryLogin(t, ws(otherRegion[node]), name, 10*time.Second)
		if r.Kind != "refused" {
			t.Fatalf("%s (held on %s) on %s: %v, want refused", name, node, otherRegion[node], r)
		}
		_ = c.Close()
	}
	// Two logins for one name from both regions at once: exactly one wins.
	// West's request reaches the registry regionDelay after it is sent, so
	// east's goes after an offset from 0 to 35 ms: they arrive together,
	// either one first.
	wins := map[string]int{}
	for k := range 8 {
		name := fmt.Sprintf("race-%d", k)
		ce, cw := dial(t, ws("east-1")), dial(t, ws("west-1"))
		var re, rw loginResult
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); rw = loginOn(cw, name, 10*time.Second) }()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(k) * 5 * time.Millisecond) // the offset of the race, not a wait
			re = loginOn(ce, name, 10*time.Second)
		}()
		wg.Wait()
		switch {
		case re.Kind == "ok" && rw.Kind == "refused":
			wins["east"]++
		case rw.Kind == "ok" && re.Kind == "refused":
			wins["west"]++
		default:
			t.Fatalf("%s raced from east (%v) and west (%v): want one ok and one refused", name, re, rw)
		}
		_, _ = ce.Close(), cw.Close()
	}
	t.Logf("regions: 8 races for a name between east and west: one winner each (east won %d, west %d)", wins["east"], wins["west"])

	// Relay round trips, and what crossed the gateways meanwhile.
	pairs := map[string]*callPair{
		"east":   {a: held["alice"], b: held["bob"], aName: "alice", bName: "bob"},
		"west":   {a: held["carol"], b: held["dave"], aName: "carol", bName: "dave"},
		"across": {a: held["erin"], b: held["frank"], aName: "erin", bName: "frank"},
		"site":   {a: held["gina"], b: held["ian"], aName: "gina", bName: "ian"},
	}
	for name, p := range pairs {
		if err := p.call(10 * time.Second); err != nil {
			t.Fatalf("call %s: %v", name, err)
		}
	}
	// The site reaches west too: through its hub and the gateway.
	waitFor(t, "a frame from the site to west", 10*time.Second, func() error {
		_ = held["gina"].SendRaw([]byte(`{"type":"candidate","name":"carol","candidate":{"from":"the site"}}`))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return recvExactly(ctx, held["carol"], `{"type":"candidate","candidate":{"from":"the site"}}`)
	})
	drain(held["gina"], 100*time.Millisecond)
	drain(held["carol"], 100*time.Millisecond)
	// Unpaced, within the edges' per-connection burst (-burst, 200).
	rounds := map[string]int{"east": 150, "west": 150, "site": 150, "across": 100}
	rtts := map[string][]time.Duration{}
	for _, name := range []string{"east", "west", "site", "across"} {
		p := pairs[name]
		if err := p.call(10 * time.Second); err != nil { // a new call: the candidate limit counts per call
			t.Fatalf("call %s: %v", name, err)
		}
		before, err := rg.crossed()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for range rounds[name] {
			rt, err := p.roundTrip(5 * time.Second)
			if err != nil {
				t.Fatalf("%s round trip %d: %v", name, p.seq, err)
			}
			rtts[name] = append(rtts[name], rt)
		}
		took := time.Since(start)
		after, err := rg.crossed()
		if err != nil {
			t.Fatal(err)
		}
		crossed := after - before
		pc := percentiles(rtts[name], 50, 90, 99)
		t.Logf("regions: relay round trip %-6s p50 %s  p90 %s  p99 %s  (%d round trips, %d frames in %v; SIGNAL messages across the gateways meanwhile: %d)",
			name, ms(pc[0]), ms(pc[1]), ms(pc[2]), rounds[name], 2*rounds[name], took.Round(time.Millisecond), crossed)
		if name == "across" {
			if crossed < int64(2*rounds[name]) {
				t.Fatalf("across: %d messages crossed for %d relayed frames: the counters do not count what they should", crossed, 2*rounds[name])
			}
			continue
		}
		// What crosses anyway: each west edge's heartbeat (a KV put to
		// east and its acknowledgement), one every heartbeatEvery, and one
		// more at each end of the window.
		bound := int64(2 * 2 * (int(took/heartbeatEvery) + 2))
		if crossed > bound {
			t.Fatalf("%s: %d messages crossed the gateways during %d relayed frames inside the region; the heartbeats account for at most %d", name, crossed, 2*rounds[name], bound)
		}
	}
	// Every account crosses in interest-only mode (nats-server >= 2.9): a
	// subject goes to the other region only once it has a subscriber there,
	// so not even the first frame of an in-region call crosses.
	modes := map[string]bool{}
	for _, n := range rg.nodes {
		if n.region == "site" {
			continue
		}
		g, err := rg.gatewayz(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range g.Outbound {
			for _, a := range out.Accounts {
				if a.Name == "SIGNAL" {
					modes[a.Mode] = true
				}
			}
		}
	}
	if !modes["Interest-Only"] || len(modes) != 1 {
		t.Fatalf("SIGNAL's gateway interest modes: %v, want Interest-Only only", slices.Collect(maps.Keys(modes)))
	}

	// The cut.
	for name, p := range pairs {
		if err := p.call(10 * time.Second); err != nil {
			t.Fatalf("call %s: %v", name, err)
		}
	}
	revs := revisions(t, js, held)
	offline, err := obs.SubscribeSync("presence.offline.>")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range rg.links {
		l.Cut()
	}
	cutAt := time.Now()
	waitFor(t, "every gateway connection gone after the cut", 15*time.Second, rg.gatewaysDown)
	downAfter := time.Since(cutAt)
	end := cutAt.Add(regionCut)
	cut := runDuringCut(t, rg, edges, pairs, held, end)
	if time.Now().After(end.Add(5 * time.Second)) {
		t.Fatalf("the activity during the cut overran its window by %v", time.Since(end))
	}

	// Restore: the gateways come back, west logs in again, cross-region
	// frames flow again.
	for _, l := range rg.links {
		l.Restore()
	}
	restoredAt := time.Now()
	back := afterRestore(t, rg, ws("west-1"), pairs["across"], restoredAt)
	westBack := back.clients
	across := pairs["across"]
	for _, c := range []*client.Client{across.a, across.b} {
		drain(c, 200*time.Millisecond) // the retries' duplicates and their error frames
	}
	t.Logf("regions: cut at 0; every gateway connection gone after %v; restored at %v", downAfter.Round(time.Millisecond), restoredAt.Sub(cutAt).Round(time.Millisecond))
	cut.log(t)
	t.Logf("regions: after the restore: gateways all up after %v, first west login ok after %v, first cross-region frame after %v",
		back.gateways.Round(time.Millisecond), back.firstLogin.Round(time.Millisecond), back.firstCross.Round(time.Millisecond))
	for _, k := range slices.Sorted(maps.Keys(back.failed)) {
		t.Logf("regions: after the restore, before the first ok: %d west logins got %s", back.failed[k], k)
	}
	cut.check(t)

	// Nothing was released, nothing is held twice, and the calls go on.
	for {
		m, err := offline.NextMsg(10 * time.Millisecond)
		if err != nil {
			break
		}
		if _, ok := held[strings.TrimPrefix(m.Subject, "presence.offline.")]; ok {
			t.Fatalf("a held name was released: %s %s", m.Subject, m.Data)
		}
	}
	if now := revisions(t, js, held); !maps.Equal(now, revs) {
		t.Fatalf("held names' revisions: %v after the cut, %v before", now, revs)
	}
	for name, c := range held {
		select {
		case <-c.Done():
			t.Fatalf("%s's connection closed", name)
		default:
		}
		node := home[name]
		oc, r := tryLogin(t, ws(otherRegion[node]), name, 10*time.Second)
		if r.Kind != "refused" {
			t.Fatalf("after the cut: %s (held on %s) on %s: %v, want refused", name, node, otherRegion[node], r)
		}
		_ = oc.Close()
	}
	for _, name := range []string{"east", "west", "site", "across"} {
		if _, err := pairs[name].roundTrip(10 * time.Second); err != nil {
			t.Fatalf("%s after the cut: %v", name, err)
		}
	}

	// In the end the users bucket holds exactly the names of the
	// connections still open: every other login was released, once.
	for _, c := range westBack {
		_ = c.Close()
	}
	kv, err := js.KeyValue(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(held))
	waitFor(t, "the users bucket to hold exactly the open connections' names", 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return err
		}
		var got []string
		for k := range keys.Keys() {
			got = append(got, k)
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("users bucket %v, want %v", got, want)
		}
		return nil
	})
	if v := rg.violations(); len(v) > 0 {
		t.Fatalf("permission violations:\n%s", strings.Join(v, "\n"))
	}
	for _, s := range append(slices.Collect(maps.Values(edges)), reg) {
		if s.proc.exited() {
			t.Errorf("%s exited: %v", s.proc.name, s.proc.err)
		}
		if out := s.proc.out.String(); strings.Contains(out, "panic:") || strings.Contains(out, "DATA RACE") {
			t.Errorf("%s:\n%s", s.proc.name, out)
		}
	}
	t.Logf("regions: TestRegions took %v (build %v)", time.Since(began).Round(time.Millisecond), built.Sub(began).Round(time.Millisecond))
}

// restored is what happened once the link was restored.
type restored struct {
	gateways, firstLogin time.Duration    // after the restore
	firstCross           time.Duration    // the first frame across delivered, after the restore
	failed               map[string]int   // logins sent after the restore (before the first ok) that failed, by outcome and time
	clients              []*client.Client // the successful logins' connections
}

// afterRestore starts a login in west every 100 ms (each on its own, as
// clients do) until one succeeds, and meanwhile watches the gateways come
// back and sends a frame across every 100 ms until one arrives. A login
// sent while the gateways are back one way only may reach the registry and
// lose its reply.
func afterRestore(t *testing.T, rg *regions, url string, across *callPair, at time.Time) restored {
	t.Helper()
	res := restored{failed: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ok := make(chan struct{})
	var once sync.Once
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Since(at) < 30*time.Second {
			if rg.gatewaysUp() == nil {
				mu.Lock()
				res.gateways = time.Since(at)
				mu.Unlock()
				return
			}
			time.Sleep(20 * time.Millisecond) // polling the monitoring port
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Since(at) < 30*time.Second {
			_ = across.a.SendRaw([]byte(`{"type":"candidate","name":"` + across.bName + `","candidate":{"back":true}}`))
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			m, err := across.b.Recv(ctx)
			cancel()
			if err == nil && m.Type == "candidate" {
				mu.Lock()
				res.firstCross = time.Since(at)
				mu.Unlock()
				return
			}
		}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
loop:
	for i := 0; ; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, r := attemptLogin(url, fmt.Sprintf("back-%d", i), 10*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if r.Kind == "ok" {
				res.clients = append(res.clients, c)
				once.Do(func() { res.firstLogin = time.Since(at); close(ok) })
				return
			}
			if c != nil {
				_ = c.Close()
			}
			res.failed[fmt.Sprintf("%s (in %v)", r, r.Took.Round(100*time.Millisecond))]++
		}()
		select {
		case <-ok:
			break loop
		case <-deadline:
			break loop
		case <-tick.C:
		}
	}
	wg.Wait()
	if res.firstLogin == 0 || res.gateways == 0 || res.firstCross == 0 {
		t.Fatalf("30s after the restore: first west login %v, gateways up %v, first frame across %v", res.firstLogin, res.gateways, res.firstCross)
	}
	return res
}

// revisions reads the users bucket's revision of every held name.
func revisions(t *testing.T, js jetstream.JetStream, held map[string]*client.Client) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	revs := map[string]uint64{}
	for name := range held {
		e, err := kv.Get(ctx, name)
		if err != nil {
			t.Fatalf("held name %s: %v", name, err)
		}
		revs[name] = e.Revision()
	}
	return revs
}

// cutReport is what happened while the link was cut.
type cutReport struct {
	mu      sync.Mutex
	calls   map[string]*cutCalls       // per in-region pair (and the site's)
	relays  map[string]int             // cross-region frames sent, by the first thing their sender got back
	silent  []string                   // the cross-region frames that got nothing back: which, and when
	logins  map[string]map[string]int  // region -> outcome -> count
	loginT  map[string][]time.Duration // region -> how long each took
	refused map[string]string          // name held in the other region -> the Kind of what a login for it got
}

type cutCalls struct {
	ok, failed int
	rtts       []time.Duration
	lastErr    error
}

// runDuringCut drives, until end: round trips inside east, inside west and
// between the site and east; frames across (both ways); logins in every
// region; logins in east for names held in west.
func runDuringCut(t *testing.T, rg *regions, edges map[string]*service, pairs map[string]*callPair, held map[string]*client.Client, end time.Time) *cutReport {
	rep := &cutReport{calls: map[string]*cutCalls{}, relays: map[string]int{},
		logins: map[string]map[string]int{}, loginT: map[string][]time.Duration{}, refused: map[string]string{}}
	var wg sync.WaitGroup
	for _, name := range []string{"east", "west", "site"} {
		cc := &cutCalls{}
		rep.calls[name] = cc
		p := pairs[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A round trip every 50 ms: well inside the edges' -rate.
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(end) {
				rt, err := p.roundTrip(3 * time.Second)
				if err != nil {
					cc.failed++
					cc.lastErr = err
					return // the pair's frames are out of step now
				}
				cc.ok++
				cc.rtts = append(cc.rtts, rt)
				<-tick.C
			}
		}()
	}
	// Across, both ways: each sender waits for what comes back, an error
	// frame if the edge knows the target is out of reach.
	across := pairs["across"]
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; time.Now().Before(end); i++ {
			from, to := across.a, across.bName
			if i%2 == 1 {
				from, to = across.b, across.aName
			}
			_ = from.SendRaw([]byte(fmt.Sprintf(`{"type":"candidate","name":%q,"candidate":{"cut":%d}}`, to, i)))
			// The error comes at once (NATS's no responders); 4s leaves
			// room for a loaded CI machine (a late error would be read
			// as the next frame's and shift every count after it).
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			m, err := from.Recv(ctx)
			cancel()
			outcome := "nothing within 4s"
			sentAt := regionCut - time.Until(end) // since the cut
			switch {
			case err != nil:
			case m.Type == "error":
				outcome = "error frame: " + m.Message
			default:
				outcome = "frame: " + string(m.Raw)
			}
			rep.mu.Lock()
			rep.relays[outcome]++
			if err != nil {
				rep.silent = append(rep.silent, fmt.Sprintf("#%d to %s, sent %v after the cut", i, to, sentAt.Round(time.Millisecond)))
			}
			rep.mu.Unlock()
			<-tick.C
		}
	}()
	// Logins, a new connection every 250 ms in each region.
	for _, node := range []string{"east-2", "west-1", "site-1"} {
		region := rg.byName[node].region
		rep.logins[region] = map[string]int{}
		url := edges[node].ws
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for i := 0; time.Now().Before(end); i++ {
				c, r := attemptLogin(url, fmt.Sprintf("cut-%s-%d", region, i), 10*time.Second)
				if c != nil && r.Kind == "refused" {
					r.Then = followUp(c, 200*time.Millisecond)
				}
				rep.mu.Lock()
				rep.logins[region][r.String()]++
				rep.loginT[region] = append(rep.loginT[region], r.Took)
				rep.mu.Unlock()
				if c != nil {
					_ = c.Close()
				}
				<-tick.C
			}
		}()
	}
	// Names held in west, asked for in east (which still has the bucket).
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, name := range []string{"carol", "dave", "frank"} {
			c, r := attemptLogin(edges["east-1"].ws, name, 10*time.Second)
			rep.mu.Lock()
			rep.refused[name] = r.Kind
			rep.mu.Unlock()
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	wg.Wait()
	return rep
}

func (r *cutReport) log(t *testing.T) {
	t.Helper()
	for _, name := range []string{"east", "west", "site"} {
		c := r.calls[name]
		p := percentiles(c.rtts, 50)
		t.Logf("regions: during the cut, calls %-4s: %d round trips went on (p50 %s), %d failed", name, c.ok, ms(p[0]), c.failed)
	}
	for _, k := range slices.Sorted(maps.Keys(r.relays)) {
		t.Logf("regions: during the cut, cross-region frames: %d got %s", r.relays[k], k)
	}
	for _, region := range []string{"east", "west", "site"} {
		p := percentiles(r.loginT[region], 50, 100)
		for _, k := range slices.Sorted(maps.Keys(r.logins[region])) {
			t.Logf("regions: during the cut, logins in %-4s: %d got %s", region, r.logins[region][k], k)
		}
		t.Logf("regions: during the cut, logins in %-4s took p50 %s, max %s", region, ms(p[0]), ms(p[1]))
	}
	for _, name := range slices.Sorted(maps.Keys(r.refused)) {
		t.Logf("regions: during the cut, %s (held in west) asked for in east: %s", name, r.refused[name])
	}
}

// check fails the test unless the cut did what deploy/README.md says.
func (r *cutReport) check(t *testing.T) {
	t.Helper()
	for name, c := range r.calls {
		if c.failed > 0 || c.ok == 0 {
			t.Errorf("during the cut, calls %s: %d ok, %d failed (%v); want them to go on", name, c.ok, c.failed, c.lastErr)
		}
	}
	for k, n := range r.relays {
		if !strings.HasPrefix(k, "error frame: ") {
			t.Errorf("during the cut, %d cross-region frames got %s; want an error frame (silent: %v)", n, k, r.silent)
		}
	}
	if len(r.relays) == 0 {
		t.Error("during the cut, no cross-region frame was sent")
	}
	for region, outcomes := range r.logins {
		for k, n := range outcomes {
			switch {
			case region != "west" && k != "ok":
				t.Errorf("during the cut, %d logins in %s got %s; want ok (the registry and buckets are in east)", n, region, k)
			case region == "west" && (strings.HasPrefix(k, "ok") || !strings.Contains(k, ": ")):
				t.Errorf("during the cut, %d logins in west got %s; want a failure with a message", n, k)
			}
		}
	}
	for name, got := range r.refused {
		if got != "refused" {
			t.Errorf("during the cut, %s (held in west) in east: %s, want refused", name, got)
		}
	}
}
