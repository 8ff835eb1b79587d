package clustertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/client"
)

// node is one nats-server of the test cluster, run from deploy/nats/nX.conf
// with the test's ports.
type node struct {
	name                        string // n1, n2, n3: server_name in the config
	port, routePort, httpPort   int
	dir                         string // working directory: the config's store_dir is relative
	args                        []string
	proc                        *proc
	logs                        []*syncBuffer // output of every run of this node
	bin                         string
	t                           testing.TB
	clientURL, monitor, httpURL string
}

func (n *node) start() {
	n.proc = startProc(n.t, n.name, n.dir, nil, n.bin, n.args...)
	n.logs = append(n.logs, n.proc.out)
}

type cluster struct {
	t     testing.TB
	bin   string
	creds creds
	nodes []*node
}

// startCluster starts the three nodes with the checked-in configs; only the
// ports are the test's (command-line flags override the config's).
func startCluster(t testing.TB, bin string, cr creds) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: bin, creds: cr}
	ports := freePorts(t, 9)
	for i := range 3 {
		n := &node{
			name: fmt.Sprintf("n%d", i+1), port: ports[i], routePort: ports[3+i], httpPort: ports[6+i],
			dir: t.TempDir(), bin: filepath.Join(bin, "nats-server"), t: t,
		}
		n.clientURL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
		n.httpURL = fmt.Sprintf("http://127.0.0.1:%d", n.httpPort)
		c.nodes = append(c.nodes, n)
	}
	for i, n := range c.nodes {
		var routes []string
		for j, o := range c.nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", cr.RouteUser, cr.RoutePwd, o.routePort))
			}
		}
		n.args = []string{
			"-c", deployPath(t, "nats", n.name+".conf"),
			"-p", fmt.Sprint(n.port), "-m", fmt.Sprint(n.httpPort),
			"--cluster", fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", cr.RouteUser, cr.RoutePwd, n.routePort),
			"--routes", strings.Join(routes, ","),
		}
		n.start()
	}
	for _, n := range c.nodes {
		waitFor(t, n.name+" meta leader", 30*time.Second, func() error {
			if n.proc.exited() {
				t.Fatalf("%s exited: %v\n%s", n.name, n.proc.err, n.proc.out.String())
			}
			if _, err := httpGet(n.httpURL + "/healthz"); err != nil {
				return err
			}
			_, err := metaLeader(n.httpPort)
			return err
		})
	}
	return c
}

// urls lists every node's client URL, as the services are given them.
func (c *cluster) urls() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.clientURL)
	}
	return strings.Join(u, ",")
}

func (c *cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// violations returns the permission violations every node has logged.
func (c *cluster) violations() []string {
	var v []string
	for _, n := range c.nodes {
		for _, l := range n.logs {
			for _, line := range strings.Split(l.String(), "\n") {
				if strings.Contains(line, "Violation") {
					v = append(v, n.name+": "+line)
				}
			}
		}
	}
	return v
}

// connect opens a NATS connection as user (a role of accounts.conf) to
// every node, reconnecting quickly; async errors go to errs if not nil.
func (c *cluster) connect(user, name string, errs chan<- error) *nats.Conn {
	c.t.Helper()
	opts := []nats.Option{
		nats.UserInfo(user, c.creds.Passwords[user]),
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.Timeout(2 * time.Second),
	}
	if errs != nil {
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	}
	nc, err := nats.Connect(c.urls(), opts...)
	if err != nil {
		c.t.Fatalf("connect as %s: %v", user, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// service is a registry or edge process.
type service struct {
	proc  *proc
	admin string // http://127.0.0.1:port
	ws    string // edges: ws://127.0.0.1:port/
}

// startRegistry starts a registry and waits until it serves. A registry
// exits when it cannot create the buckets in time (seen in a cluster that
// has just formed); like an orchestrator, this starts it again, twice at
// most.
func (c *cluster) startRegistry(name string) *service {
	c.t.Helper()
	admin := freePort(c.t)
	for try := 1; ; try++ {
		p := startProc(c.t, name, "", []string{"NATS_USER=registry", "NATS_PASSWORD=" + c.creds.Passwords["registry"]},
			filepath.Join(c.bin, "registry"), "-nats", c.urls(), "-replicas", "3",
			"-admin", fmt.Sprintf("127.0.0.1:%d", admin), "-log-level", "debug")
		s := &service{proc: p, admin: fmt.Sprintf("http://127.0.0.1:%d", admin)}
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !p.exited() {
			if _, err = httpGet(s.admin + "/readyz"); err == nil {
				return s
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !p.exited() || try == 3 {
			c.t.Fatalf("%s not ready (try %d): %v\n%s", name, try, err, p.out.String())
		}
		c.t.Logf("%s exited at start (try %d): %s", name, try, strings.TrimSpace(tail(p.out.String(), 200)))
	}
}

func (c *cluster) startEdge(id string) *service {
	c.t.Helper()
	ports := freePorts(c.t, 2)
	p := startProc(c.t, id, "", []string{"NATS_USER=edge", "NATS_PASSWORD=" + c.creds.Passwords["edge"]},
		filepath.Join(c.bin, "edge"), "-nats", c.urls(), "-id", id,
		"-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-admin", fmt.Sprintf("127.0.0.1:%d", ports[1]))
	s := &service{proc: p, admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), ws: fmt.Sprintf("ws://127.0.0.1:%d/", ports[0])}
	c.waitReady(s, id)
	return s
}

func (c *cluster) waitReady(s *service, name string) {
	c.t.Helper()
	waitFor(c.t, name+" /readyz", 30*time.Second, func() error {
		if s.proc.exited() {
			c.t.Fatalf("%s exited: %v\n%s", name, s.proc.err, s.proc.out.String())
		}
		_, err := httpGet(s.admin + "/readyz")
		return err
	})
}

// streamInfo is the KV_users stream's info, as an observer sees it.
func streamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, "KV_users")
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// TestCluster runs the services as separate processes on a 3-node NATS
// cluster started from deploy/nats, each with its role's credentials:
//
//   - the whole protocol across two edges;
//   - the users bucket has 3 replicas; stopping the node that leads it
//     (kill -9) loses no name, and logins and calls go on (the gap from the
//     kill to the first successful login is logged); the node rejoins;
//   - the services never hit a permission violation, while edge
//     credentials cannot write the bucket or serve registry.login, and
//     observer credentials can read the bucket but not publish to a user;
//   - an edge's /metrics counted the traffic.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node NATS cluster, registries and edges")
	}
	began := time.Now()
	bin := binaries(t)
	cr := loadCreds(t)
	built := time.Now()
	cl := startCluster(t, bin, cr)
	reg1 := cl.startRegistry("registry-1") // creates the buckets
	reg2 := cl.startRegistry("registry-2")
	e1, e2 := cl.startEdge("e1"), cl.startEdge("e2")
	t.Logf("build %v; cluster, 2 registries and 2 edges up in %v",
		built.Sub(began).Round(time.Millisecond), time.Since(built).Round(time.Millisecond))

	// The protocol, across the two edges.
	alice := login(t, e1.ws, "alice")
	bob := login(t, e2.ws, "bob")
	{
		c := dial(t, e2.ws)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Login(ctx, "alice")
		cancel()
		if err != client.ErrNameTaken {
			t.Fatalf("second login of alice on the other edge: %v, want refused", err)
		}
	}
	send := func(c *client.Client, frame string) {
		t.Helper()
		if err := c.SendRaw([]byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	send(alice, `{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0 a"}}`)
	expect(t, bob, `{"type":"offer","offer":{"type":"offer","sdp":"v=0 a"},"name":"alice"}`)
	send(bob, `{"type":"answer","name":"alice","answer":{"type":"answer","sdp":"v=0 b"}}`)
	expect(t, alice, `{"type":"answer","answer":{"type":"answer","sdp":"v=0 b"}}`)
	send(alice, `{"type":"candidate","name":"bob","candidate":{"candidate":"c1","sdpMid":"0"}}`)
	expect(t, bob, `{"type":"candidate","candidate":{"candidate":"c1","sdpMid":"0"}}`)
	send(bob, `{"type":"candidate","name":"alice","candidate":{"candidate":"c2","sdpMid":"0"}}`)
	expect(t, alice, `{"type":"candidate","candidate":{"candidate":"c2","sdpMid":"0"}}`)
	send(alice, `{"type":"leave","name":"bob"}`)
	expect(t, bob, `{"type":"leave"}`)
	// A new call; then alice's connection closes and bob is told.
	send(bob, `{"type":"offer","name":"alice","offer":"again"}`)
	expect(t, alice, `{"type":"offer","offer":"again","name":"bob"}`)
	_ = alice.Close()
	expect(t, bob, `{"type":"leave"}`)
	// alice's name is free again, cluster-wide.
	alice = login(t, e2.ws, "alice")
	_ = alice.Close()

	// The users bucket: 3 replicas, all current.
	obsErrs := make(chan error, 16)
	obs := cl.connect("observer", "clustertest-observer", obsErrs)
	js, err := jetstream.New(obs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	si, err := streamInfo(ctx, js)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if si.Config.Replicas != 3 || si.Cluster == nil || len(si.Cluster.Replicas) != 2 {
		t.Fatalf("KV_users: replicas %d, cluster %+v; want 3 replicas", si.Config.Replicas, si.Cluster)
	}

	// Names held across the failover, on both edges: bob and h1..h4.
	held := map[string]*client.Client{"bob": bob}
	for i, name := range []string{"h1", "h2", "h3", "h4"} {
		held[name] = login(t, []string{e1.ws, e2.ws}[i%2], name)
	}
	if v := cl.violations(); len(v) > 0 {
		t.Fatalf("the services hit permission violations:\n%s", strings.Join(v, "\n"))
	}

	failover(t, cl, js, e1, e2, held)

	permissions(t, cl, held["bob"], obsErrs, js)

	// /metrics of an edge counted the logins and relays above.
	b, err := httpGet(e1.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics := string(b)
	if v, ok := promValue(metrics, "signal_edge_logins_total", `result="accepted"`); !ok || v < 2 {
		t.Errorf("e1 signal_edge_logins_total{result=accepted} = %v (found %v), want >= 2", v, ok)
	}
	if v, ok := promValue(metrics, "signal_edge_messages_relayed_total", `type="offer"`); !ok || v < 1 {
		t.Errorf("e1 signal_edge_messages_relayed_total{type=offer} = %v (found %v), want >= 1", v, ok)
	}
	if v, ok := promValue(metrics, "signal_nats_connected"); !ok || v != 1 {
		t.Errorf("e1 signal_nats_connected = %v (found %v), want 1", v, ok)
	}
	if _, err := httpGet(reg1.admin + "/metrics"); err != nil {
		t.Error(err)
	}

	for _, s := range []*service{reg1, reg2, e1, e2} {
		if s.proc.exited() {
			t.Errorf("%s exited: %v", s.proc.name, s.proc.err)
		}
		if out := s.proc.out.String(); strings.Contains(out, "panic:") || strings.Contains(out, "DATA RACE") {
			t.Errorf("%s:\n%s", s.proc.name, out)
		}
	}
	t.Logf("TestCluster took %v", time.Since(began).Round(time.Millisecond))
}

// failover kills the node that leads the users bucket, measures the gap to
// the first successful login, checks that every held name is still held
// and that calls go on, then restarts the node and waits until it is a
// current replica again.
func failover(t *testing.T, cl *cluster, js jetstream.JetStream, e1, e2 *service, held map[string]*client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	si, err := streamInfo(ctx, js)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	leader := cl.node(si.Cluster.Leader)
	others := map[string]string{}
	for _, stream := range []string{"KV_edges"} {
		if s, err := js.Stream(context.Background(), stream); err == nil {
			if info, err := s.Info(context.Background()); err == nil && info.Cluster != nil {
				others[stream] = info.Cluster.Leader
			}
		}
	}
	meta, _ := metaLeader(cl.nodes[0].httpPort)
	kv, err := js.KeyValue(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	revs := map[string]uint64{}
	for name := range held {
		e, err := kv.Get(context.Background(), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		revs[name] = e.Revision()
	}
	// Whatever the registries release meanwhile, they announce here.
	offline, err := js.Conn().SubscribeSync("presence.offline.>")
	if err != nil {
		t.Fatal(err)
	}
	defer offline.Unsubscribe()
	t.Logf("leaders: KV_users %s, KV_edges %s, meta %s; killing %s", leader.name, others["KV_edges"], meta, leader.name)
	leader.proc.kill()
	killed := time.Now()

	// Logins with new names, one attempt every 50ms alternating the edges,
	// until one succeeds: the first success bounds the gap.
	var (
		first     atomic.Int64 // ns after the kill of the first success
		attempts  atomic.Int64
		lastErrMu sync.Mutex
		lastErr   error
		wg        sync.WaitGroup
	)
	actx, acancel := context.WithCancel(context.Background())
	for i := 0; first.Load() == 0; i++ {
		if time.Since(killed) > 30*time.Second {
			acancel()
			wg.Wait()
			t.Fatalf("no login within 30s of killing %s (%d attempts; last error %v)", leader.name, attempts.Load(), lastErr)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			attempts.Add(1)
			url := []string{e1.ws, e2.ws}[i%2]
			dctx, dcancel := context.WithTimeout(actx, 10*time.Second)
			defer dcancel()
			c, err := client.Dial(dctx, url, nil)
			if err == nil {
				defer c.Abort()
				_, err = c.Login(dctx, fmt.Sprintf("after-%d", i))
			}
			if err == nil {
				first.CompareAndSwap(0, int64(time.Since(killed)))
				return
			}
			lastErrMu.Lock()
			lastErr = err
			lastErrMu.Unlock()
		}(i)
		time.Sleep(50 * time.Millisecond)
	}
	acancel()
	wg.Wait()
	gap := time.Duration(first.Load())
	t.Logf("failover: kill of %s -> first successful login %v (%d login attempts)", leader.name, gap.Round(time.Millisecond), attempts.Load())

	// No registered name is lost: every held name is refused to a newcomer,
	// still in the bucket, and its connection is still open.
	checkHeld := func(when string) {
		t.Helper()
		for {
			m, err := offline.NextMsg(10 * time.Millisecond)
			if err != nil {
				break
			}
			if _, ok := held[strings.TrimPrefix(m.Subject, "presence.offline.")]; ok {
				t.Fatalf("%s: a registry released a held name: %s %s", when, m.Subject, m.Data)
			}
		}
		for name, c := range held {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			e, err := kv.Get(ctx, name)
			cancel()
			if err != nil {
				t.Fatalf("%s: held name %s: bucket entry: %v", when, name, err)
			}
			if e.Revision() != revs[name] {
				t.Fatalf("%s: held name %s: revision %d, was %d: %s", when, name, e.Revision(), revs[name], e.Value())
			}
			select {
			case <-c.Done():
				t.Fatalf("%s: held name %s: its connection closed", when, name)
			default:
			}
		}
	}
	for name := range held {
		waitFor(t, "refusal of held name "+name, 20*time.Second, func() error {
			nc := dial(t, []string{e1.ws, e2.ws}[len(name)%2])
			defer nc.Abort()
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
			defer cancel()
			_, err := nc.Login(ctx, name)
			switch {
			case err == nil:
				t.Fatalf("held name %s was lost: a new connection got it after the failover", name)
			case errors.Is(err, client.ErrNameTaken):
				return nil
			}
			return err
		})
	}
	checkHeld("after the first login")

	// Calls go on: between held users across the edges (h1 is on e1, bob on
	// e2), and between two new users.
	callStart := time.Now()
	waitFor(t, "a call between held users after the failover", 20*time.Second, func() error {
		if err := held["h1"].SendRaw([]byte(`{"type":"offer","name":"bob","offer":"after failover"}`)); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for {
			m, err := held["bob"].Recv(ctx)
			if err != nil {
				return fmt.Errorf("bob: %w", err)
			}
			if m.Type == "offer" {
				return nil
			}
		}
	})
	x, y := login(t, e1.ws, "x-after"), login(t, e2.ws, "y-after")
	_ = x.SendRaw([]byte(`{"type":"offer","name":"y-after","offer":1}`))
	expect(t, y, `{"type":"offer","offer":1,"name":"x-after"}`)
	_ = y.SendRaw([]byte(`{"type":"answer","name":"x-after","answer":2}`))
	expect(t, x, `{"type":"answer","answer":2}`)
	t.Logf("failover: calls work (%v after the first login)", time.Since(callStart).Round(time.Millisecond))

	// Still held once the registries' lease (-lease, 10s) has run out since
	// the kill: the outage must not look like dead edges.
	time.Sleep(time.Until(killed.Add(10*time.Second + 5*time.Second)))
	checkHeld(fmt.Sprintf("%v after the kill", time.Since(killed).Round(time.Second)))

	// The node comes back on its store and catches up.
	restarted := time.Now()
	leader.start()
	waitFor(t, "KV_users replicas current after the restart", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		si, err := streamInfo(ctx, js)
		if err != nil {
			return err
		}
		names := []string{si.Cluster.Leader}
		for _, r := range si.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s: current %v offline %v lag %d", r.Name, r.Current, r.Offline, r.Lag)
			}
			names = append(names, r.Name)
		}
		if !slices.Contains(names, leader.name) || len(names) != 3 {
			return fmt.Errorf("peers %v, want %s among 3", names, leader.name)
		}
		return nil
	})
	t.Logf("failover: %s restarted and current again in %v", leader.name, time.Since(restarted).Round(time.Millisecond))
	if v := cl.violations(); len(v) > 0 {
		t.Fatalf("the services hit permission violations:\n%s", strings.Join(v, "\n"))
	}
}

// permissions checks what edge and observer credentials may not do.
func permissions(t *testing.T, cl *cluster, bob *client.Client, obsErrs chan error, js jetstream.JetStream) {
	violation := regexp.MustCompile(`(?i)permissions violation`)
	waitErr := func(errs chan error, want string) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case err := <-errs:
				if violation.MatchString(err.Error()) && strings.Contains(err.Error(), want) {
					return
				}
			case <-timeout:
				t.Fatalf("no permissions violation for %s", want)
			}
		}
	}

	// Edge credentials: no write to the users bucket.
	edgeErrs := make(chan error, 64)
	impostor := cl.connect("edge", "clustertest-impostor", edgeErrs)
	ejs, err := jetstream.New(impostor)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ekv, err := ejs.KeyValue(ctx, "users") // reading the bucket's info is allowed
	cancel()
	if err != nil {
		t.Fatalf("edge credentials: open the users bucket: %v", err)
	}
	for _, op := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"put", func(ctx context.Context) error { _, err := ekv.Put(ctx, "mallory", []byte(`{}`)); return err }},
		{"create", func(ctx context.Context) error { _, err := ekv.Create(ctx, "mallory", []byte(`{}`)); return err }},
		{"delete", func(ctx context.Context) error { return ekv.Delete(ctx, "bob") }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := op.do(ctx)
		cancel()
		if err == nil {
			t.Fatalf("edge credentials: %s on the users bucket succeeded", op.name)
		}
		want := `"$KV.users.mallory"`
		if op.name == "delete" {
			want = `"$KV.users.bob"`
		}
		waitErr(edgeErrs, want)
	}
	for _, api := range []string{"$JS.API.STREAM.PURGE.KV_users", "$JS.API.STREAM.DELETE.KV_users", "$JS.API.STREAM.UPDATE.KV_users"} {
		_, err := impostor.Request(api, []byte(`{}`), 500*time.Millisecond)
		if err == nil {
			t.Fatalf("edge credentials: %s answered", api)
		}
		waitErr(edgeErrs, `"`+api+`"`)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := ekv.Get(ctx, "mallory"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("mallory in the bucket: %v", err)
	}
	if _, err := ekv.Get(ctx, "bob"); err != nil {
		t.Fatalf("bob's entry after the impostor's delete: %v", err)
	}
	cancel()

	// Edge credentials: no serving registry.login. The subscription is
	// refused (reported asynchronously), and every request is answered by
	// the real registry (a micro error for the malformed request).
	var stolen atomic.Int64
	if _, err := impostor.QueueSubscribe("registry.login", "registry", func(m *nats.Msg) {
		stolen.Add(1)
		_ = m.Respond([]byte(`{"ok":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	_ = impostor.Flush()
	waitErr(edgeErrs, `"registry.login"`)
	for range 20 {
		resp, err := impostor.Request("registry.login", []byte(`{}`), 2*time.Second)
		if err != nil {
			t.Fatalf("registry.login: %v", err)
		}
		if resp.Header.Get("Nats-Service-Error-Code") != "400" {
			t.Fatalf("registry.login answered by someone else: %q %v", resp.Data, resp.Header)
		}
	}
	if n := stolen.Load(); n > 0 {
		t.Fatalf("the impostor received %d registry.login requests", n)
	}

	// Observer credentials: read the bucket (what "nats kv ls users" and
	// "nats kv get" do), list the services ("nats micro ls"), but not
	// publish to a user or write the bucket.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "users")
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatalf("observer: list keys: %v", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, want := range []string{"bob", "h1", "h2", "h3", "h4"} {
		if !slices.Contains(keys, want) {
			t.Fatalf("observer: keys %v, missing %s", keys, want)
		}
	}
	obs := cl.connect("observer", "clustertest-observer-2", obsErrs)
	inbox := nats.NewInbox()
	sub, err := obs.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := obs.PublishRequest("$SRV.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	services := map[string]int{}
	for deadline := time.Now().Add(5 * time.Second); services["edge"] < 2 || services["registry"] < 2; {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var ping struct{ Name string }
		_ = json.Unmarshal(m.Data, &ping)
		services[ping.Name]++
	}
	// No more than that, either.
	for {
		m, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		var ping struct{ Name string }
		_ = json.Unmarshal(m.Data, &ping)
		services[ping.Name]++
	}
	if services["edge"] != 2 || services["registry"] != 2 {
		t.Fatalf("observer: $SRV.PING found %v, want 2 edges and 2 registries", services)
	}
	if err := obs.Publish("user.bob", []byte(`{"type":"offer","offer":"forged","name":"x"}`)); err != nil {
		t.Fatal(err)
	}
	_ = obs.Flush()
	waitErr(obsErrs, `"user.bob"`)
	expectNothing(t, bob, 300*time.Millisecond)
	if _, err := kv.Put(ctx, "mallory", []byte(`{}`)); err == nil {
		t.Fatal("observer: put on the users bucket succeeded")
	}
	waitErr(obsErrs, `"$KV.users.mallory"`)

	// Every violation the servers logged came from this test's own
	// connections, none from a service.
	for _, v := range cl.violations() {
		if !strings.Contains(v, `:clustertest-`) {
			t.Errorf("violation not from the test: %s", v)
		}
	}
}
