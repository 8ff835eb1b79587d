package clustertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestRunner runs deploy/cluster.sh (with the binaries this test built and
// free ports), uses the cluster it prints, stops it with SIGTERM and checks
// that every process it started is gone and that the edges closed their
// clients gracefully.
func TestRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("runs deploy/cluster.sh")
	}
	for _, tool := range []string{"bash", "curl", "setsid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("cluster.sh needs %s: %v", tool, err)
		}
	}
	bin := binaries(t)
	p := freePorts(t, 17)
	join := func(ps []int) string {
		var s []string
		for _, x := range ps {
			s = append(s, strconv.Itoa(x))
		}
		return strings.Join(s, " ")
	}
	dir := t.TempDir()
	out := &syncBuffer{}
	cmd := exec.Command("bash", deployPath(t, "cluster.sh"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(),
		"NATS_PORTS="+join(p[0:3]), "ROUTE_PORTS="+join(p[3:6]), "MONITOR_PORTS="+join(p[6:9]),
		"EDGE_PORTS="+join(p[9:12]), "EDGE_ADMIN_PORTS="+join(p[12:15]), "REGISTRY_ADMIN_PORTS="+join(p[15:17]),
		"CLUSTER_DIR="+dir, "BIN_DIR="+bin, "WAIT=40")
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(40 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
		for _, pid := range ours(bin, p[:3]) { // never leave one behind
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("cluster.sh output:\n%s", out.String())
		}
	})
	waitFor(t, "cluster.sh to report the cluster up", 90*time.Second, func() error {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("cluster.sh exited: %v", err)
		default:
		}
		// The whole block it prints once up: it is written line by line.
		if !strings.Contains(out.String(), "stops everything.") {
			return fmt.Errorf("not up yet")
		}
		return nil
	})
	t.Logf("cluster.sh: up in %v", time.Since(began).Round(time.Millisecond))

	// What it prints works: WebSocket URLs, metrics, the observer's URL.
	text := out.String()
	urls := regexp.MustCompile(`ws://127\.0\.0\.1:\d+/`).FindAllString(text, -1)
	if len(urls) != 3 {
		t.Fatalf("cluster.sh printed %d WebSocket URLs, want 3", len(urls))
	}
	a := login(t, urls[0], "runner-a")
	b := login(t, urls[2], "runner-b")
	_ = a.SendRaw([]byte(`{"type":"offer","name":"runner-b","offer":"o"}`))
	expect(t, b, `{"type":"offer","offer":"o","name":"runner-a"}`)
	for _, m := range regexp.MustCompile(`http://127\.0\.0\.1:\d+/metrics`).FindAllString(text, -1) {
		if _, err := httpGet(m); err != nil {
			t.Error(err)
		}
	}
	for _, want := range []string{"sub 'user.>'", "kv ls users", "micro ls", "--user sys", "server report jetstream",
		fmt.Sprintf("nats://observer:%s@127.0.0.1:%d", loadCreds(t).Passwords["observer"], p[0])} {
		if !strings.Contains(text, want) {
			t.Errorf("cluster.sh does not print %q", want)
		}
	}
	pids := ours(bin, p[:3])
	if len(pids) != 3+2+3 {
		t.Errorf("found %d processes of the runner, want 8: %v", len(pids), pids)
	}

	// An edge dies: the runner says so, keeps the rest running, and SIGUSR1
	// starts it again (same port).
	m := regexp.MustCompile(`edge-2 +pid (\d+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("cluster.sh does not print edge-2's pid")
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cluster.sh to report edge-2's exit", 10*time.Second, func() error {
		if !strings.Contains(out.String(), fmt.Sprintf("edge-2 (pid %d) exited", pid)) {
			return fmt.Errorf("not reported")
		}
		return nil
	})
	_ = cmd.Process.Signal(syscall.SIGUSR1)
	waitFor(t, "edge-2 restarted", 20*time.Second, func() error {
		_, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", p[13]))
		return err
	})
	c := login(t, urls[1], "runner-c")
	_ = c.SendRaw([]byte(`{"type":"offer","name":"runner-b","offer":"c"}`))
	expect(t, b, `{"type":"offer","offer":"c","name":"runner-c"}`)
	if n := len(ours(bin, p[:3])); n != 8 {
		t.Errorf("after the restart: %d processes, want 8", n)
	}

	// SIGTERM: everything stops, edges first (clients get 1001).
	stopped := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		exited = true
		if err == nil || !strings.Contains(err.Error(), "143") {
			t.Logf("cluster.sh exit: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("cluster.sh did not stop within 40s of SIGTERM")
	}
	t.Logf("cluster.sh: stopped in %v", time.Since(stopped).Round(time.Millisecond))
	if left := ours(bin, p[:3]); len(left) > 0 {
		t.Fatalf("processes left behind: %v", left)
	}
	for _, c := range []interface {
		Done() <-chan struct{}
		CloseStatus() (ws.StatusCode, string)
	}{a, b, c} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a client is still connected")
		}
		if code, _ := c.CloseStatus(); code != ws.StatusGoingAway {
			t.Errorf("client closed with %d, want 1001", code)
		}
	}
	if !strings.Contains(out.String(), "cluster.sh: stopped") {
		t.Error("cluster.sh did not report stopping")
	}
	if _, err := os.Stat(filepath.Join(dir, "logs")); err != nil {
		t.Errorf("CLUSTER_DIR given: its logs should stay: %v", err)
	}
}

// ours lists the live processes running a binary from bin with one of the
// NATS client ports in their command line: the ones a runner with those
// ports started.
func ours(bin string, ports []int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		mine := false
		for _, port := range ports {
			for _, a := range args {
				mine = mine || a == strconv.Itoa(port) || strings.Contains(a, ":"+strconv.Itoa(port))
			}
		}
		if strings.HasPrefix(args[0], bin) && mine {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie is gone
			}
			pids = append(pids, pid)
		}
	}
	return pids
}
