package clustertest

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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/proctest"
)

var repoRoot = proctest.RepoRoot

// deployPath is a path under deploy/.
func deployPath(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "deploy"}, elem...)...)
}

// binaries builds nats-server (the version in go.mod), edge, registry and
// signal once per test binary (removed by TestMain).
var binaries = proctest.Binaries

func TestMain(m *testing.M) { proctest.Main(m) }

// creds are the checked-in cluster's credentials.
type creds = proctest.Creds

func loadCreds(t testing.TB) creds {
	t.Helper()
	return proctest.LoadCreds(t, "edge", "registry", "observer", "sys")
}

var freePort = proctest.FreePort

// freePorts returns n distinct free ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	seen := map[int]bool{}
	var ps []int
	for len(ps) < n {
		p := freePort(t)
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return ps
}

// syncBuffer collects a process's output.
type syncBuffer = proctest.Buffer

// proc is a process started by a test; t.Cleanup kills it.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startProc starts bin with args in dir (if not empty) with extra
// environment env, and kills it when the test ends.
func startProc(t testing.TB, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// No NATS_* or SIGNAL_* from the environment running the tests.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NATS_") && !strings.HasPrefix(kv, "SIGNAL_") && !strings.HasPrefix(kv, "EDGE_ID=") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output (last 3000 bytes):\n%s", p.name, tail(p.out.String(), 3000))
		}
	})
	return p
}

// kill kills the process and waits for it (bounded).
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitFor calls f until it returns nil, for at most within.
func waitFor(t testing.TB, what string, within time.Duration, f func() error) {
	t.Helper()
	if err := poll(within, f); err != nil {
		t.Fatalf("%s: not within %v: %v", what, within, err)
	}
}

// errStop, returned (or wrapped) by a poll function, ends the poll at once
// with that error.
var errStop = errors.New("stop polling")

// poll calls f every 50ms until it returns nil (poll returns nil), an
// errStop, or within has passed (poll returns f's last error).
func poll(within time.Duration, f func() error) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || errors.Is(err, errStop) {
			return err
		}
		select {
		case <-deadline.C:
			return err
		case <-tick.C:
		}
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

// metaLeader is the JetStream meta leader that a node's monitoring port
// reports ("" if none).
func metaLeader(monitorPort int) (string, error) {
	b, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/jsz", monitorPort))
	if err != nil {
		return "", err
	}
	var jsz struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.Unmarshal(b, &jsz); err != nil {
		return "", err
	}
	if jsz.Meta == nil || jsz.Meta.Leader == "" {
		return "", fmt.Errorf("port %d: no meta leader yet", monitorPort)
	}
	return jsz.Meta.Leader, nil
}

// dial connects a protocol client to url; t.Cleanup aborts it.
func dial(t testing.TB, url string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Abort() })
	return c
}

// login dials url and logs name in, retrying for a while if the system is
// not ready yet (an error frame); a refused name is fatal.
func login(t testing.TB, url, name string) *client.Client {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c := dial(t, url)
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		m, err := c.Login(ctx, name)
		cancel()
		if err == nil {
			return c
		}
		_ = c.Abort()
		if err == client.ErrNameTaken {
			t.Fatalf("login %s on %s: refused: %s", name, url, m.Raw)
		}
		if time.Now().After(deadline) {
			t.Fatalf("login %s on %s: %v", name, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expect reads the next message of c and checks it is exactly want.
func expect(t testing.TB, c *client.Client, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Recv(ctx)
	if err != nil {
		t.Fatalf("waiting for %s: %v", want, err)
	}
	if string(m.Raw) != want {
		t.Fatalf("got %s, want %s", m.Raw, want)
	}
}

// expectNothing checks that c receives nothing for d.
func expectNothing(t testing.TB, c *client.Client, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if m, err := c.Recv(ctx); err == nil {
		t.Fatalf("unexpected message: %s", m.Raw)
	}
}

// promValue sums the samples of metric whose labels include every one of
// labels (`name="value"` strings) in a Prometheus text exposition.
func promValue(text, metric string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric) {
			continue
		}
		rest := line[len(metric):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer metric name
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(f[0], &v); err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}
