package chaostest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/proctest"
)

// Processes, the cluster and the probes the test reads them with. Small
// helpers in the spirit of deploy/clustertest (a _test package: what both
// need lives in services/proctest), with what chaos needs on top: output
// to files that survive restarts, signals (SIGKILL, SIGSTOP, SIGCONT,
// SIGTERM) and restarts with the same command.

var repoRoot = proctest.RepoRoot

// creds are the checked-in cluster's credentials.
type creds = proctest.Creds

func loadCreds(t testing.TB) creds {
	t.Helper()
	return proctest.LoadCreds(t, "edge", "registry", "observer")
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ps []int
	for len(ps) < n {
		p := proctest.FreePort(t)
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return ps
}

// proc is a process of the run. Its output goes to a file of the run's log
// directory, appended by every start, so that a failure's report has the
// whole story of a process that was killed and started again.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	dir  string
	log  *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	starts  int
	stopped bool // SIGSTOPped and not continued
}

func newProc(t testing.TB, logDir, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return &proc{name: name, bin: bin, args: args, env: env, dir: dir, log: f}
}

// start starts the process (again) with its command.
func (p *proc) start() error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// Nothing of the environment running the tests that the services read.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "SIGNAL_") && !strings.HasPrefix(kv, "EDGE_ID=") && !strings.HasPrefix(kv, "GOGC=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, p.env...)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	fmt.Fprintf(p.log, "=== chaostest: start %d of %s at %s\n", p.starts, p.name, time.Now().Format("15:04:05.000"))
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done, p.stopped, p.err = cmd, done, false, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *proc) startCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// pid is the running process's id (0 when it has exited).
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) exitedLocked() bool {
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitedLocked()
}

// signal sends sig to the running process; SIGSTOP and SIGCONT are
// remembered so that the cleanup continues a stopped process before it
// kills it.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return fmt.Errorf("%s: not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return err
	}
	fmt.Fprintf(p.log, "=== chaostest: %v to %s at %s\n", sig, p.name, time.Now().Format("15:04:05.000"))
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	return nil
}

// kill sends SIGKILL and waits (10s at most) until the process is gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done, stopped := p.cmd, p.done, p.stopped
	p.mu.Unlock()
	if cmd == nil || done == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	fmt.Fprintf(p.log, "=== chaostest: SIGKILL to %s at %s\n", p.name, time.Now().Format("15:04:05.000"))
	if stopped {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// term sends SIGTERM and waits up to within for the exit, then kills.
func (p *proc) term(within time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || done == nil {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(within):
		p.kill()
		return fmt.Errorf("%s: did not stop within %v of SIGTERM; killed", p.name, within)
	}
}

// fds counts the process's open file descriptors (/proc, Linux).
func (p *proc) fds() (int, error) {
	pid := p.pid()
	if pid == 0 {
		return 0, fmt.Errorf("%s: not running", p.name)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// waitUntil calls f every 50ms until it returns nil or within has passed;
// it returns f's last error then. It is how the test waits on state.
func waitUntil(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// pause waits for d or until ctx ends: the fault schedule's spacing (what
// a fault waits for is state, polled with waitUntil).
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// httpGet returns the body of a 200 answer.
func httpGet(url string) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// promValue is the value of the unlabelled sample of metric in a
// Prometheus text exposition.
func promValue(text, metric string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, metric+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// node is one nats-server of the cluster, run from deploy/nats/<name>.conf
// with the test's ports; its store survives restarts.
type node struct {
	name                      string
	port, routePort, httpPort int
	url, httpURL              string
	p                         *proc
}

// service is a registry or an edge.
type service struct {
	name  string
	p     *proc
	admin string // http://127.0.0.1:port
	ws    string // edges: ws://127.0.0.1:port/
	id    string // edges: -id
}

// cluster is the system under test: 3 NATS nodes, the registries and the
// edges, and an observer connection (read-only credentials) that the test
// reads the buckets and the edges' status with.
type cluster struct {
	t      testing.TB
	bin    string
	creds  creds
	logDir string
	nodes  []*node
	regs   []*service
	edges  []*service
	obs    *nats.Conn
	js     jetstream.JetStream

	obsMu   sync.Mutex
	obsErrs map[string]int // the observer connection's asynchronous errors
}

// startCluster starts the three nodes and waits for the JetStream meta
// leader; only the ports are the test's.
func startCluster(t testing.TB, bin, logDir string, cr creds) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: bin, creds: cr, logDir: logDir, obsErrs: map[string]int{}}
	ports := freePorts(t, 9)
	for i := range 3 {
		n := &node{name: fmt.Sprintf("n%d", i+1), port: ports[i], routePort: ports[3+i], httpPort: ports[6+i]}
		n.url = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
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
		dir := filepath.Join(logDir, "store-"+n.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.p = newProc(t, logDir, n.name, dir, nil, filepath.Join(bin, "nats-server"),
			"-c", filepath.Join(repoRoot(t), "deploy", "nats", n.name+".conf"),
			"-p", fmt.Sprint(n.port), "-m", fmt.Sprint(n.httpPort),
			"--cluster", fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", cr.RouteUser, cr.RoutePwd, n.routePort),
			"--routes", strings.Join(routes, ","))
		t.Cleanup(n.p.kill)
		if err := n.p.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		c.waitNode(n)
	}
	var err error
	c.obs, err = nats.Connect(c.urls(), nats.UserInfo("observer", cr.Passwords["observer"]), nats.Name("chaostest-observer"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Timeout(2*time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.obsMu.Lock()
			c.obsErrs[err.Error()]++
			c.obsMu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.obs.Close)
	if c.js, err = jetstream.New(c.obs); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitNode waits until n serves with a JetStream meta leader.
func (c *cluster) waitNode(n *node) {
	c.t.Helper()
	err := waitUntil(context.Background(), 60*time.Second, func() error {
		if n.p.exited() {
			return fmt.Errorf("%s exited", n.name)
		}
		if _, err := httpGet(n.httpURL + "/healthz"); err != nil {
			return err
		}
		b, err := httpGet(n.httpURL + "/jsz")
		if err != nil {
			return err
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if err := json.Unmarshal(b, &jsz); err != nil {
			return err
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return errors.New("no meta leader yet")
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("%s: %v", n.name, err)
	}
}

// urls lists every node's client URL, as the services are given them.
func (c *cluster) urls() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, n.url)
	}
	return strings.Join(u, ",")
}

func (c *cluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// addRegistry starts a registry with extra flags (-lease, say).
func (c *cluster) addRegistry(name string, flags ...string) *service {
	c.t.Helper()
	admin := freePorts(c.t, 1)[0]
	s := &service{name: name, admin: fmt.Sprintf("http://127.0.0.1:%d", admin)}
	args := append([]string{"-nats", c.urls(), "-replicas", "3", "-admin", fmt.Sprintf("127.0.0.1:%d", admin)}, flags...)
	s.p = newProc(c.t, c.logDir, name, "", []string{"NATS_USER=registry", "NATS_PASSWORD=" + c.creds.Passwords["registry"]},
		filepath.Join(c.bin, "registry"), args...)
	c.t.Cleanup(s.p.kill)
	c.regs = append(c.regs, s)
	if err := c.startService(s); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// addEdge starts an edge with id and extra flags.
func (c *cluster) addEdge(id string, flags ...string) *service {
	c.t.Helper()
	ports := freePorts(c.t, 2)
	s := &service{name: id, id: id, admin: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), ws: fmt.Sprintf("ws://127.0.0.1:%d/", ports[0])}
	args := append([]string{"-nats", c.urls(), "-id", id,
		"-listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "-admin", fmt.Sprintf("127.0.0.1:%d", ports[1])}, flags...)
	s.p = newProc(c.t, c.logDir, id, "", []string{"NATS_USER=edge", "NATS_PASSWORD=" + c.creds.Passwords["edge"]},
		filepath.Join(c.bin, "edge"), args...)
	c.t.Cleanup(s.p.kill)
	c.edges = append(c.edges, s)
	if err := c.startService(s); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// startService starts s (again) and waits until its /readyz answers.
func (c *cluster) startService(s *service) error {
	if err := s.p.start(); err != nil {
		return err
	}
	return waitUntil(context.Background(), 60*time.Second, func() error {
		if s.p.exited() {
			return fmt.Errorf("%s exited", s.name)
		}
		_, err := httpGet(s.admin + "/readyz")
		return err
	})
}

// edgeStatus is what edge.<id>.status answers.
type edgeStatus struct {
	Instance    string `json:"instance"`
	Connections int64  `json:"connections"`
	Users       int64  `json:"users"`
	Relayed     uint64 `json:"relayed"`
	Errors      uint64 `json:"errors"`
	Dropped     uint64 `json:"dropped"`
}

func (c *cluster) edgeStatus(id string) (edgeStatus, error) {
	var st edgeStatus
	m, err := c.obs.Request("edge."+id+".status", nil, 2*time.Second)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(m.Data, &st)
	return st, err
}

// violations counts the permission violations the nodes logged, by role
// and subject prefix (the first two tokens).
func (c *cluster) violations() map[string]int {
	out := map[string]int{}
	for _, n := range c.nodes {
		b, err := os.ReadFile(n.p.log.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "Violation") {
				continue
			}
			role, subj := "?", "?"
			if _, r, ok := strings.Cut(line, `"SIGNAL/user:`); ok {
				role, _, _ = strings.Cut(r, `"`)
			}
			if _, r, ok := strings.Cut(line, `Subject "`); ok {
				subj, _, _ = strings.Cut(r, `"`)
				if parts := strings.SplitN(subj, ".", 3); len(parts) > 2 {
					subj = parts[0] + "." + parts[1] + ".>"
				}
			}
			kind := "Subscription"
			if strings.Contains(line, "Publish Violation") {
				kind = "Publish"
			}
			out[role+" "+kind+" "+subj]++
		}
	}
	return out
}

// streamLeader is the node that leads a stream, as an observer sees it.
func (c *cluster) streamLeader(ctx context.Context, stream string) (leader string, replicas []*jetstream.PeerInfo, err error) {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return "", nil, err
	}
	si, err := s.Info(ctx)
	if err != nil {
		return "", nil, err
	}
	if si.Cluster == nil {
		return "", nil, fmt.Errorf("%s: no cluster info", stream)
	}
	return si.Cluster.Leader, si.Cluster.Replicas, nil
}

// streamCurrent reports nil when stream has a leader and every replica is
// current and online.
func (c *cluster) streamCurrent(ctx context.Context, stream string) error {
	leader, replicas, err := c.streamLeader(ctx, stream)
	if err != nil {
		return err
	}
	if leader == "" {
		return fmt.Errorf("%s: no leader", stream)
	}
	if len(replicas) != 2 {
		return fmt.Errorf("%s: %d replicas besides the leader", stream, len(replicas))
	}
	for _, r := range replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("%s: replica %s current %v offline %v lag %d", stream, r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return nil
}

// goroutines reads go_goroutines from a service's /metrics.
func goroutines(s *service) (int, error) {
	b, err := httpGet(s.admin + "/metrics")
	if err != nil {
		return 0, err
	}
	v, ok := promValue(string(b), "go_goroutines")
	if !ok {
		return 0, errors.New("no go_goroutines in /metrics")
	}
	return int(v), nil
}
