package clustertest

import (
	"fmt"
	"net/http"
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

// TestRegionsRunner runs deploy/regions.sh (with the binaries this test
// built and free ports), uses the two regions it prints (a call across,
// a name refused across, a cut of the link and its restore through the
// printed control port), stops it with SIGTERM and checks that every
// process it started is gone and that the edges closed their clients
// gracefully.
func TestRegionsRunner(t *testing.T) {
	if testing.Short() {
		t.Skip("runs deploy/regions.sh")
	}
	for _, tool := range []string{"bash", "curl", "setsid"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("regions.sh needs %s: %v", tool, err)
		}
	}
	bin := binaries(t)
	p := freePorts(t, 43)
	next := 0
	take := func(n int) string {
		var s []string
		for _, x := range p[next : next+n] {
			s = append(s, strconv.Itoa(x))
		}
		next += n
		return strings.Join(s, " ")
	}
	eastNATS, westNATS := take(3), take(2)
	env := []string{
		"EAST_NATS_PORTS=" + eastNATS, "EAST_ROUTE_PORTS=" + take(3), "EAST_MONITOR_PORTS=" + take(3),
		"EAST_GATEWAY_PORTS=" + take(3), "EAST_LEAF_PORTS=" + take(3),
		"WEST_NATS_PORTS=" + westNATS, "WEST_ROUTE_PORTS=" + take(2), "WEST_MONITOR_PORTS=" + take(2),
		"WEST_GATEWAY_PORTS=" + take(2),
	}
	linkPorts := take(5)
	control := "127.0.0.1:" + take(1)
	sitePort := take(1)
	env = append(env, "LINK_PORTS="+linkPorts, "LINK_CONTROL="+control, "SITE_NATS_PORT="+sitePort, "SITE_MONITOR_PORT="+take(1),
		"EAST_EDGE_PORTS="+take(2), "WEST_EDGE_PORTS="+take(2), "SITE_EDGE_PORTS="+take(1),
		"EAST_EDGE_ADMIN_PORTS="+take(2), "WEST_EDGE_ADMIN_PORTS="+take(2), "SITE_EDGE_ADMIN_PORTS="+take(1),
		"REGISTRY_ADMIN_PORTS="+take(2))
	var mine []int // the ports that name the runner's processes
	for _, f := range strings.Fields(eastNATS + " " + westNATS + " " + sitePort + " " + linkPorts) {
		n, _ := strconv.Atoi(f)
		mine = append(mine, n)
	}
	dir := t.TempDir()
	out := &syncBuffer{}
	cmd := exec.Command("bash", deployPath(t, "regions.sh"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(append(os.Environ(), env...), "REGIONS_DIR="+dir, "BIN_DIR="+bin, "WAIT=40")
	left := func() []int { return append(ours(bin, mine), ours(filepath.Join(dir, "bin"), mine)...) }
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
		for _, pid := range left() { // never leave one behind
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("regions.sh output:\n%s", out.String())
		}
	})
	waitFor(t, "regions.sh to report the regions up", 120*time.Second, func() error {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("regions.sh exited: %v", err)
		default:
		}
		// The whole block it prints once up: it is written line by line.
		if !strings.Contains(out.String(), "two regions up") || !strings.Contains(out.String(), "stops everything.") {
			return fmt.Errorf("not up yet")
		}
		return nil
	})
	t.Logf("regions.sh: up in %v", time.Since(began).Round(time.Millisecond))

	text := out.String()
	urls := regexp.MustCompile(`ws://127\.0\.0\.1:\d+/`).FindAllString(text, -1)
	if len(urls) != 5 {
		t.Fatalf("regions.sh printed %d WebSocket URLs, want 5 (2 east, 2 west, 1 site)", len(urls))
	}
	east, west, site := urls[0], urls[2], urls[4]
	a := mustLogin(t, east, "runner-east")
	b := mustLogin(t, west, "runner-west")
	c := mustLogin(t, site, "runner-site")
	_ = a.SendRaw([]byte(`{"type":"offer","name":"runner-west","offer":"o"}`))
	expect(t, b, `{"type":"offer","offer":"o","name":"runner-east"}`)
	_ = c.SendRaw([]byte(`{"type":"offer","name":"runner-west","offer":"s"}`))
	expect(t, b, `{"type":"offer","offer":"s","name":"runner-site"}`)
	if oc, r := tryLogin(t, west, "runner-east", 10*time.Second); r.Kind != "refused" {
		t.Fatalf("runner-east (held in east) on west: %v, want refused", r)
	} else {
		_ = oc.Close()
	}
	for _, want := range []string{"server report gateways", "server request gateways", "gatewayz?accs=1", "accstatz",
		"kv ls users", "--user sys", "http://" + control + "/cut", "http://" + control + "/restore"} {
		if !strings.Contains(text, want) {
			t.Errorf("regions.sh does not print %q", want)
		}
	}
	if n := len(left()); n != 1+6+2+5 {
		t.Errorf("found %d processes of the runner, want 14 (the link, 6 nats-servers, 2 registries, 5 edges)", n)
	}

	// The printed control port cuts the link: west cannot log in; restored,
	// it can.
	post := func(path string) {
		t.Helper()
		resp, err := http.Post("http://"+control+path, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
	post("/cut")
	waitFor(t, "a failed login in west while the link is cut", 20*time.Second, func() error {
		c, r := tryLogin(t, west, "runner-cut", 10*time.Second)
		_ = c.Close()
		if r.Kind == "ok" {
			return fmt.Errorf("login ok")
		}
		return nil
	})
	post("/restore")
	waitFor(t, "a login in west after the restore", 30*time.Second, func() error {
		c, r := tryLogin(t, west, "runner-back", 10*time.Second)
		_ = c.Close()
		if r.Kind != "ok" {
			return fmt.Errorf("%v", r)
		}
		return nil
	})

	stopped := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		exited = true
	case <-time.After(60 * time.Second):
		t.Fatal("regions.sh did not stop within 60s of SIGTERM")
	}
	t.Logf("regions.sh: stopped in %v", time.Since(stopped).Round(time.Millisecond))
	if l := left(); len(l) > 0 {
		t.Fatalf("processes left behind: %v", l)
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
	if !strings.Contains(out.String(), "regions.sh: stopped") {
		t.Error("regions.sh did not report stopping")
	}
}
