package clustertest

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/natsrtc/signal/deploy/regions/linkdelay"
	"github.com/natsrtc/signal/services/client"
)

// The two-region topology of deploy/regions/local-*.conf on this machine:
// east (the home region: 3 nodes with JetStream, the registry, the buckets),
// west (2 nodes, no JetStream), a leaf-node site hanging off east, and a
// delaying link (package linkdelay) in front of every gateway port, which
// every node advertises instead of its own, so that every gateway
// connection crosses a link and nothing else does.

// regionNode is one nats-server of the topology.
type regionNode struct {
	name, region              string // east-1 ...; east, west or site
	port, routePort, httpPort int
	gwPort, leafPort          int // 0 where the node has none
	link                      *linkdelay.Link
	clientURL, httpURL        string
	proc                      *proc
}

type regions struct {
	t      testing.TB
	bin    string
	creds  creds
	delay  time.Duration // one way
	nodes  []*regionNode // east..., west..., site
	links  []*linkdelay.Link
	byName map[string]*regionNode
}

// startRegions starts east (eastN nodes), west (westN nodes) and the site,
// with every gateway behind a link that adds delay each way.
func startRegions(t *testing.T, bin string, cr creds, eastN, westN int, delay time.Duration) *regions {
	t.Helper()
	r := &regions{t: t, bin: bin, creds: cr, delay: delay, byName: map[string]*regionNode{}}
	// Every port at once, distinct, the links' too: a port taken by
	// listening on :0 could be one handed out a moment ago for a node that
	// has not started yet.
	ports := freePorts(t, 6*(eastN+westN+1))
	add := func(region string, i int) *regionNode {
		n := &regionNode{name: fmt.Sprintf("%s-%d", region, i), region: region}
		ps := ports[:6]
		ports = ports[6:]
		n.port, n.routePort, n.httpPort = ps[0], ps[1], ps[2]
		if region != "site" {
			n.gwPort = ps[3]
			l, err := linkdelay.Listen(fmt.Sprintf("127.0.0.1:%d", ps[5]), fmt.Sprintf("127.0.0.1:%d", n.gwPort), delay)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			n.link = l
			r.links = append(r.links, l)
		}
		if region == "east" {
			n.leafPort = ps[4]
		}
		n.clientURL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
		n.httpURL = fmt.Sprintf("http://127.0.0.1:%d", n.httpPort)
		r.nodes = append(r.nodes, n)
		r.byName[n.name] = n
		return n
	}
	for i := range eastN {
		add("east", i+1)
	}
	for i := range westN {
		add("west", i+1)
	}
	add("site", 1)

	gwURLs := func(region string) string {
		var u []string
		for _, n := range r.region(region) {
			u = append(u, fmt.Sprintf("nats://gateway:dev-gateway-pw@%s", n.link.Addr()))
		}
		return "[" + strings.Join(u, ", ") + "]"
	}
	var leafURLs []string
	for _, n := range r.region("east") {
		leafURLs = append(leafURLs, fmt.Sprintf("nats-leaf://leaf:dev-leaf-pw@127.0.0.1:%d", n.leafPort))
	}
	for _, n := range r.nodes {
		args := []string{"-c", deployPath(t, "regions", "local-"+n.region+".conf"), "-n", n.name,
			"-p", fmt.Sprint(n.port), "-m", fmt.Sprint(n.httpPort)}
		var env []string
		if n.region != "site" {
			peers := r.region(n.region)
			var routes []string
			for _, o := range peers {
				if o != n {
					routes = append(routes, fmt.Sprintf("nats-route://%s:%s@127.0.0.1:%d", cr.RouteUser, cr.RoutePwd, o.routePort))
				}
			}
			args = append(args, "--cluster", fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", cr.RouteUser, cr.RoutePwd, n.routePort),
				"--routes", strings.Join(routes, ","))
			other := map[string]string{"east": "west", "west": "east"}[n.region]
			env = append(env, fmt.Sprintf("GATEWAY_LISTEN=127.0.0.1:%d", n.gwPort),
				"GATEWAY_ADVERTISE="+n.link.Addr(), "GATEWAY_PEERS="+gwURLs(other))
			if n.leafPort != 0 {
				env = append(env, fmt.Sprintf("LEAF_LISTEN=127.0.0.1:%d", n.leafPort))
			}
		} else {
			env = append(env, "LEAF_HUB=["+strings.Join(leafURLs, ", ")+"]")
		}
		n.proc = startProc(t, n.name, t.TempDir(), env, filepath.Join(bin, "nats-server"), args...)
	}
	for _, n := range r.nodes {
		waitFor(t, n.name+" up", 30*time.Second, func() error {
			if n.proc.exited() {
				t.Fatalf("%s exited: %v\n%s", n.name, n.proc.err, n.proc.out.String())
			}
			_, err := httpGet(n.httpURL + "/healthz")
			return err
		})
	}
	for _, n := range r.region("east") {
		waitFor(t, n.name+" meta leader", 30*time.Second, func() error {
			_, err := metaLeader(n.httpPort)
			return err
		})
	}
	r.waitGateways(30 * time.Second)
	waitFor(t, "the site's leaf connection", 30*time.Second, func() error {
		var lz struct {
			Leafs int `json:"leafnodes"`
		}
		if err := getJSON(r.byName["site-1"].httpURL+"/leafz", &lz); err != nil {
			return err
		}
		if lz.Leafs != 1 {
			return fmt.Errorf("%d leaf connections", lz.Leafs)
		}
		return nil
	})
	return r
}

func (r *regions) region(name string) []*regionNode {
	var ns []*regionNode
	for _, n := range r.nodes {
		if n.region == name {
			ns = append(ns, n)
		}
	}
	return ns
}

// urls lists the client URLs of a region's nodes.
func (r *regions) urls(region string) string {
	var u []string
	for _, n := range r.region(region) {
		u = append(u, n.clientURL)
	}
	return strings.Join(u, ",")
}

// gatewayz is what a node's /gatewayz?accs=1 says.
type gatewayz struct {
	Outbound map[string]struct {
		Conn *struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			RTT     string `json:"rtt"`
			InMsgs  int64  `json:"in_msgs"`
			OutMsgs int64  `json:"out_msgs"`
		} `json:"connection"`
		Accounts []struct {
			Name string `json:"name"`
			Mode string `json:"interest_mode"`
		} `json:"accounts"`
	} `json:"outbound_gateways"`
	Inbound map[string][]struct {
		Conn *struct {
			InMsgs int64 `json:"in_msgs"`
		} `json:"connection"`
	} `json:"inbound_gateways"`
}

func (r *regions) gatewayz(n *regionNode) (gatewayz, error) {
	var g gatewayz
	return g, getJSON(n.httpURL+"/gatewayz?accs=1", &g)
}

// gatewaysUp reports nil when every node of east and west has its outbound
// gateway to the other region connected, through a link. (A node sends to
// the other region on its one outbound gateway connection and receives on
// the inbound ones, which some nodes of the other region made to it: with
// 3 nodes in east and 2 in west, one east node has no inbound.)
func (r *regions) gatewaysUp() error {
	links := map[int]bool{}
	for _, l := range r.links {
		var port int
		_, _ = fmt.Sscanf(l.Addr()[strings.LastIndexByte(l.Addr(), ':')+1:], "%d", &port)
		links[port] = true
	}
	for _, n := range r.nodes {
		if n.region == "site" {
			continue
		}
		other := map[string]string{"east": "west", "west": "east"}[n.region]
		g, err := r.gatewayz(n)
		if err != nil {
			return err
		}
		out := g.Outbound[other]
		if out.Conn == nil {
			return fmt.Errorf("%s: no outbound gateway to %s", n.name, other)
		}
		if !links[out.Conn.Port] {
			return fmt.Errorf("%s: outbound gateway to %s at port %d, which is no link: it bypasses the delay", n.name, other, out.Conn.Port)
		}
	}
	return nil
}

// gatewaysDown reports nil when no node has a gateway connection left.
func (r *regions) gatewaysDown() error {
	for _, n := range r.nodes {
		if n.region == "site" {
			continue
		}
		g, err := r.gatewayz(n)
		if err != nil {
			return err
		}
		for name, out := range g.Outbound {
			if out.Conn != nil {
				return fmt.Errorf("%s: outbound gateway to %s still connected", n.name, name)
			}
		}
		for name, in := range g.Inbound {
			if len(in) > 0 {
				return fmt.Errorf("%s: inbound gateway from %s still connected", n.name, name)
			}
		}
	}
	return nil
}

func (r *regions) waitGateways(within time.Duration) {
	r.t.Helper()
	waitFor(r.t, "gateways between east and west, through the links", within, r.gatewaysUp)
}

// crossed is how many messages of the SIGNAL account have crossed between
// the regions so far, either way: what west's nodes sent to and received
// from gateways (every message that crosses is sent by one region's node
// and received by one of the other's). System account traffic (server
// events) is not counted.
func (r *regions) crossed() (int64, error) {
	var total int64
	for _, n := range r.region("west") {
		var st struct {
			Accounts []struct {
				Acc  string `json:"acc"`
				Sent struct {
					Gateways *struct {
						Msgs int64 `json:"msgs"`
					} `json:"gateways"`
				} `json:"sent"`
				Received struct {
					Gateways *struct {
						Msgs int64 `json:"msgs"`
					} `json:"gateways"`
				} `json:"received"`
			} `json:"account_statz"`
		}
		if err := getJSON(n.httpURL+"/accstatz?unused=1", &st); err != nil {
			return 0, err
		}
		found := false
		for _, a := range st.Accounts {
			if a.Acc != "SIGNAL" {
				continue
			}
			found = true
			if a.Sent.Gateways != nil {
				total += a.Sent.Gateways.Msgs
			}
			if a.Received.Gateways != nil {
				total += a.Received.Gateways.Msgs
			}
		}
		if !found {
			return 0, fmt.Errorf("%s: no SIGNAL account in /accstatz", n.name)
		}
	}
	return total, nil
}

// violations returns the permission violations every node has logged.
func (r *regions) violations() []string {
	var v []string
	for _, n := range r.nodes {
		for _, line := range strings.Split(n.proc.out.String(), "\n") {
			if strings.Contains(line, "Violation") {
				v = append(v, n.name+": "+line)
			}
		}
	}
	return v
}

func getJSON(url string, v any) error {
	b, err := httpGet(url)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// startService starts a registry or an edge with the credentials of its
// role and waits for its /readyz.
func (r *regions) startService(name, role, urls string, args ...string) *service {
	r.t.Helper()
	ps := freePorts(r.t, 2)
	s := &service{admin: fmt.Sprintf("http://127.0.0.1:%d", ps[0])}
	args = append([]string{"-nats", urls, "-admin", fmt.Sprintf("127.0.0.1:%d", ps[0])}, args...)
	if role == "edge" {
		// Fenced only by a cut longer than most of the registry's 30 s
		// lease (the test's cut is 5 s).
		args = append(args, "-id", name, "-listen", fmt.Sprintf("127.0.0.1:%d", ps[1]), "-fence-after", "22s")
		s.ws = fmt.Sprintf("ws://127.0.0.1:%d/", ps[1])
	}
	env := []string{"NATS_USER=" + role, "NATS_PASSWORD=" + r.creds.Passwords[role]}
	for try := 1; ; try++ {
		s.proc = startProc(r.t, name, "", env, filepath.Join(r.bin, role), args...)
		err := poll(30*time.Second, func() error {
			if s.proc.exited() {
				return errStop
			}
			_, err := httpGet(s.admin + "/readyz")
			return err
		})
		if err == nil {
			return s
		}
		// A registry exits when it cannot create the buckets in time (a
		// young cluster); like an orchestrator, start it again.
		if !s.proc.exited() || try == 3 {
			r.t.Fatalf("%s not ready (try %d): %v\n%s", name, try, err, s.proc.out.String())
		}
		r.t.Logf("%s exited at start (try %d): %s", name, try, strings.TrimSpace(tail(s.proc.out.String(), 300)))
	}
}

// loginResult is what a login got back first.
type loginResult struct {
	Kind    string // "ok", "refused" (a login reply with success false) or "error" (an error frame)
	Message string // the reply's or the error frame's message
	Took    time.Duration
	Err     error  // no reply at all (timeout, closed)
	Then    string // an error frame that followed a refusal, when looked for
}

func (l loginResult) String() string {
	if l.Err != nil {
		return "no reply: " + l.Err.Error()
	}
	s := l.Kind
	if l.Message != "" {
		s += ": " + l.Message
	}
	if l.Then != "" {
		s += ", then an error frame: " + l.Then
	}
	return s
}

// followUp returns the message of an error frame that c receives within d
// ("" if none).
func followUp(c *client.Client, d time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return ""
		}
		if m.Type == "error" {
			return m.Message
		}
	}
}

// tryLogin dials url and sends a login for name, timing the reply; the
// client (open whatever happened) is aborted when the test ends.
func tryLogin(t testing.TB, url, name string, within time.Duration) (*client.Client, loginResult) {
	t.Helper()
	c := dial(t, url)
	return c, loginOn(c, name, within)
}

// attemptLogin is tryLogin for goroutines other than the test's: it never
// fails the test, and the caller closes the client (nil if the dial failed).
func attemptLogin(url, name string, within time.Duration) (*client.Client, loginResult) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		return nil, loginResult{Err: err}
	}
	return c, loginOn(c, name, within)
}

// loginOn sends a login for name on c and waits for the first answer.
//
// Every login gets a login reply (success false with a message when it
// cannot succeed) before any error frame, in the edge being written now;
// the edge of today answers a login it cannot serve with an error frame
// alone. Both count as a failed login here; Kind says which it was.
func loginOn(c *client.Client, name string, within time.Duration) loginResult {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	start := time.Now()
	if err := c.Send(map[string]string{"type": "login", "name": name}); err != nil {
		return loginResult{Err: err}
	}
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return loginResult{Err: err, Took: time.Since(start)}
		}
		switch m.Type {
		case "login":
			r := loginResult{Kind: "refused", Message: m.Message, Took: time.Since(start)}
			if m.Success {
				r.Kind = "ok"
			}
			return r
		case "error":
			return loginResult{Kind: "error", Message: m.Message, Took: time.Since(start)}
		}
	}
}

// drain reads and returns whatever c receives until it has been quiet for
// quiet.
func drain(c *client.Client, quiet time.Duration) []string {
	var got []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		m, err := c.Recv(ctx)
		cancel()
		if err != nil {
			return got
		}
		got = append(got, string(m.Raw))
	}
}

// mustLogin logs name in on url, retrying what is not a success for a
// while (the registry may still be starting).
func mustLogin(t testing.TB, url, name string) *client.Client {
	t.Helper()
	var c *client.Client
	err := poll(20*time.Second, func() error {
		var r loginResult
		if c, r = tryLogin(t, url, name, 6*time.Second); r.Kind == "ok" {
			return nil
		}
		_ = c.Abort()
		return fmt.Errorf("%v", r)
	})
	if err != nil {
		t.Fatalf("login %s on %s: %v", name, url, err)
	}
	return c
}

// callPair is two logged-in users who exchange frames.
type callPair struct {
	a, b         *client.Client
	aName, bName string
	seq          int
}

// roundTrip sends a candidate from a to b, and b sends it back: the time
// until it is back at a. Both frames must arrive exactly as relayed.
func (p *callPair) roundTrip(within time.Duration) (time.Duration, error) {
	p.seq++
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	start := time.Now()
	cand := fmt.Sprintf(`{"i":%d}`, p.seq)
	if err := p.a.SendRaw([]byte(`{"type":"candidate","name":"` + p.bName + `","candidate":` + cand + `}`)); err != nil {
		return 0, err
	}
	want := `{"type":"candidate","candidate":` + cand + `}`
	if err := recvExactly(ctx, p.b, want); err != nil {
		return 0, fmt.Errorf("%s: %w", p.bName, err)
	}
	if err := p.b.SendRaw([]byte(`{"type":"candidate","name":"` + p.aName + `","candidate":` + cand + `}`)); err != nil {
		return 0, err
	}
	if err := recvExactly(ctx, p.a, want); err != nil {
		return 0, fmt.Errorf("%s: %w", p.aName, err)
	}
	return time.Since(start), nil
}

// call makes a and b peers (offer, answer), which also warms each side's
// route to the other (a users-bucket lookup on the first frame).
func (p *callPair) call(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := p.a.SendRaw([]byte(`{"type":"offer","name":"` + p.bName + `","offer":{"sdp":"v=0"}}`)); err != nil {
		return err
	}
	if err := recvExactly(ctx, p.b, `{"type":"offer","offer":{"sdp":"v=0"},"name":"`+p.aName+`"}`); err != nil {
		return fmt.Errorf("%s: %w", p.bName, err)
	}
	if err := p.b.SendRaw([]byte(`{"type":"answer","name":"` + p.aName + `","answer":{"sdp":"v=0"}}`)); err != nil {
		return err
	}
	if err := recvExactly(ctx, p.a, `{"type":"answer","answer":{"sdp":"v=0"}}`); err != nil {
		return fmt.Errorf("%s: %w", p.aName, err)
	}
	return nil
}

// recvExactly reads the next frame of c and checks it is want.
func recvExactly(ctx context.Context, c *client.Client, want string) error {
	m, err := c.Recv(ctx)
	if err != nil {
		return err
	}
	if string(m.Raw) != want {
		return fmt.Errorf("got %s, want %s", m.Raw, want)
	}
	return nil
}

// percentiles returns the p-th percentiles (0..100) of ds.
func percentiles(ds []time.Duration, ps ...float64) []time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	out := make([]time.Duration, len(ps))
	if len(s) == 0 {
		return out
	}
	for i, p := range ps {
		k := int(p / 100 * float64(len(s)-1))
		out[i] = s[k]
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
