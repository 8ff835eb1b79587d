package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/natsrtc/signal/edge/stack"
)

// runJSON runs the tool with args and decodes its JSON line.
func runJSON(t *testing.T, args ...string) (map[string]any, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut, false)
	t.Logf("signal-bench %s (exit %d)\n%s", strings.Join(args, " "), code, errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON line on stdout, got %q", out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("stdout is not JSON: %v: %s", err, lines[0])
	}
	return m, code
}

func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("JSON has no number %q: %v", key, m)
	}
	return v
}

func lat(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("JSON has no latency %q: %v", key, m)
	}
	return v
}

func checkRelay(t *testing.T, m map[string]any, code int, pairs float64, closedLoop bool) {
	t.Helper()
	if code != 0 || m["clean"] != true || m["error"] != nil {
		t.Errorf("exit %d, clean %v, error %v", code, m["clean"], m["error"])
	}
	if got := num(t, m, "pairs_ok"); got != pairs {
		t.Errorf("pairs_ok = %v, want %v", got, pairs)
	}
	for _, k := range []string{"misrouted", "lost", "error_frames", "disconnects", "login_failures", "login_refused"} {
		if got := num(t, m, k); got != 0 {
			t.Errorf("%s = %v, want 0", k, got)
		}
	}
	if num(t, m, "msgs_per_s") <= 0 || num(t, m, "round_trips") <= 0 {
		t.Errorf("no traffic measured: %v", m)
	}
	// Closed loop: two messages per round trip. The two counts use windows
	// of the same length that may be shifted by the main goroutine's
	// wake-up delay (delivered: receive times; round trips: send times).
	if closedLoop {
		d, rt := num(t, m, "delivered_in_window"), num(t, m, "round_trips")
		if diff := d - 2*rt; diff < -(0.05*2*rt+2*pairs) || diff > 0.05*2*rt+2*pairs {
			t.Errorf("delivered %v inconsistent with %v round trips", d, rt)
		}
	}
	rtt := lat(t, m, "rtt")
	p50, p99, mx := num(t, rtt, "p50_us"), num(t, rtt, "p99_us"), num(t, rtt, "max_us")
	if !(p50 > 0 && p50 <= p99 && p99 <= mx) {
		t.Errorf("percentiles out of order: %v", rtt)
	}
}

func TestModesAgainstStack(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	urls := s.Edges[0].URL + "," + s.Edges[1].URL

	t.Run("relay-closed", func(t *testing.T) {
		// -think keeps every connection well under the edge's default
		// per-connection rate limit (100 messages/s).
		m, code := runJSON(t, "relay", "-url", urls, "-pairs", "4", "-warmup", "200ms", "-duration", "1s", "-think", "20ms")
		checkRelay(t, m, code, 4, true)
		if num(t, m, "caller_urls") != 1 || num(t, m, "callee_urls") != 1 {
			t.Errorf("calls do not cross edges: %v", m)
		}
	})
	t.Run("relay-paced", func(t *testing.T) {
		// 50 offers/s per caller: under the edge's default rate limit.
		m, code := runJSON(t, "-mode", "relay", "-url", urls, "-pairs", "4", "-rate", "200", "-warmup", "200ms", "-duration", "1s", "-pad", "300")
		checkRelay(t, m, code, 4, false)
		// 200 offers/s for 1 s: allow the pacer's edges some slack.
		if got := num(t, m, "offers_in_window"); got < 195 || got > 205 {
			t.Errorf("offers_in_window = %v, want about 200", got)
		}
	})
	t.Run("conns", func(t *testing.T) {
		ready := t.TempDir() + "/ready"
		m, code := runJSON(t, "conns", "-url", s.Edges[0].URL, "-n", "60", "-c", "8", "-hold", "300ms", "-sources", "2", "-ready-file", ready)
		if code != 0 || m["clean"] != true {
			t.Errorf("exit %d, clean %v", code, m["clean"])
		}
		if num(t, m, "ok") != 60 || num(t, m, "failed") != 0 || num(t, m, "dropped") != 0 {
			t.Errorf("conns: %v", m)
		}
		if num(t, m, "connect_login_per_s") <= 0 {
			t.Errorf("no rate: %v", m)
		}
		if _, err := os.Stat(ready); !os.IsNotExist(err) {
			t.Errorf("ready file left behind: %v", err)
		}
	})
	t.Run("logins", func(t *testing.T) {
		m, code := runJSON(t, "logins", "-url", urls, "-c", "4", "-duration", "1s")
		if code != 0 || m["clean"] != true {
			t.Errorf("exit %d, clean %v", code, m["clean"])
		}
		if num(t, m, "cycles_per_s") <= 0 || num(t, m, "failures") != 0 || num(t, m, "refused") != 0 {
			t.Errorf("logins: %v", m)
		}
	})
	t.Run("edges-agree", func(t *testing.T) {
		// Every name the runs took is free again.
		var users int64
		deadline := time.NewTimer(5 * time.Second)
		defer deadline.Stop()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			users = 0
			for _, e := range s.Edges {
				users += e.Stats().Users
			}
			if users == 0 {
				break
			}
			select {
			case <-deadline.C:
				t.Fatalf("%d users still logged in", users)
			case <-tick.C:
			}
		}
	})
}

// tutorialLike is a minimal server with the tutorial's behaviour that
// matters to a client: "Hello world" as a non-JSON text frame on connect,
// success:false for a taken name, offers and answers relayed (unless
// blackHole: then they vanish, and close frames go unanswered).
func tutorialLike(t *testing.T, blackHole ...bool) string {
	drop := len(blackHole) > 0 && blackHole[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	users := map[string]net.Conn{}
	wmu := map[net.Conn]*sync.Mutex{}
	send := func(c net.Conn, v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		m := wmu[c]
		mu.Unlock()
		m.Lock()
		_ = wsutil.WriteServerText(c, b)
		m.Unlock()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		cw := &sync.Mutex{}
		mu.Lock()
		wmu[c] = cw
		mu.Unlock()
		go func() {
			var name string
			defer func() {
				mu.Lock()
				if name != "" {
					delete(users, name)
				}
				mu.Unlock()
				_ = c.Close()
			}()
			cw.Lock()
			_ = wsutil.WriteServerText(c, []byte("Hello world"))
			cw.Unlock()
			for {
				if drop && name != "" {
					// Logged in: from now on, every frame vanishes, a
					// close frame included.
					for {
						if _, err := ws.ReadFrame(c); err != nil {
							return
						}
					}
				}
				p, err := wsutil.ReadClientText(c)
				if err != nil {
					return
				}
				var m struct {
					Type, Name    string
					Offer, Answer json.RawMessage
				}
				_ = json.Unmarshal(p, &m)
				mu.Lock()
				to := users[m.Name]
				mu.Unlock()
				switch m.Type {
				case "login":
					mu.Lock()
					taken := users[m.Name] != nil
					if !taken {
						users[m.Name], name = c, m.Name
					}
					mu.Unlock()
					send(c, map[string]any{"type": "login", "success": !taken})
				case "offer":
					if to != nil {
						send(to, map[string]any{"type": "offer", "offer": m.Offer, "name": name})
					}
				case "answer":
					if to != nil {
						send(to, map[string]any{"type": "answer", "answer": m.Answer})
					}
				}
			}
		}()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "ws://" + ln.Addr().String() + "/"
}

func TestTutorialLikeServer(t *testing.T) {
	url := tutorialLike(t)
	// The server runs in this process: -pids names it, so that its CPU
	// (and the tool's, both in this process) is read from /proc.
	self := "self:" + strconv.Itoa(os.Getpid())
	m, code := runJSON(t, "relay", "-url", url, "-pairs", "3", "-warmup", "100ms", "-duration", "500ms", "-drain", "500ms", "-pids", self)
	checkRelay(t, m, code, 3, true)
	if runtime.GOOS == "linux" {
		if cpu, ok := m["server_cpu_s"].(map[string]any); !ok || cpu["self"] == nil || num(t, m, "server_cpu_us_per_msg") <= 0 || num(t, m, "tool_cpu_us_per_msg") <= 0 {
			t.Errorf("no CPU per message: %v", m)
		}
		if code := run([]string{"relay", "-url", url, "-pids", "self:0"}, io.Discard, io.Discard, false); code != 2 {
			t.Errorf("-pids self:0: exit %d, want 2", code)
		}
	}
	// Each of the 6 connections got "Hello world" before its login reply;
	// login skips those, so the relay readers see none.
	m, code = runJSON(t, "logins", "-url", url, "-c", "2", "-duration", "300ms")
	if code != 0 || num(t, m, "cycles") <= 0 {
		t.Errorf("logins against a tutorial-like server: exit %d, %v", code, m)
	}
}

func TestBlackHoleIsBounded(t *testing.T) {
	url := tutorialLike(t, true)
	start := time.Now()
	m, code := runJSON(t, "relay", "-url", url, "-pairs", "3", "-warmup", "100ms", "-duration", "300ms", "-drain", "200ms", "-timeout", "500ms")
	if code != 1 || num(t, m, "lost") != 3 || num(t, m, "round_trips") != 0 || m["clean"] != false {
		t.Errorf("black hole: exit %d, %v", code, m)
	}
	if num(t, m, "close_timeouts") != 6 {
		t.Errorf("close_timeouts = %v, want 6", m["close_timeouts"])
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestRefusedLoginsAreCounted(t *testing.T) {
	url := tutorialLike(t)
	// The same prefix and -n 1 twice at once: the second conns run finds
	// the name taken while the first holds it (from its ready file on).
	ready := t.TempDir() + "/ready"
	done := make(chan map[string]any, 1)
	go func() {
		var out, errOut bytes.Buffer
		run([]string{"conns", "-url", url, "-n", "1", "-hold", "1s", "-prefix", "dup", "-ready-file", ready}, &out, &errOut, false)
		var m map[string]any
		_ = json.Unmarshal(out.Bytes(), &m)
		done <- m
	}()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-deadline.C:
			t.Fatal("the first conns run never logged in")
		case m := <-done:
			t.Fatalf("the first conns run ended without holding its name: %v", m)
		case <-tick.C:
		}
	}
	m, code := runJSON(t, "conns", "-url", url, "-n", "1", "-hold", "0", "-prefix", "dup")
	if code != 1 || num(t, m, "refused") != 1 || m["clean"] != false {
		t.Errorf("taken name: exit %d, %v", code, m)
	}
	if first := <-done; first["ok"] != 1.0 {
		t.Errorf("first run: %v", first)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, u := range []string{"ws://example.com:9090/", "ws://10.0.0.1:9090/", "wss://127.0.0.1/", "http://127.0.0.1/", "ws://[::2]:80/"} {
		var out, errOut bytes.Buffer
		if code := run([]string{"relay", "-url", u}, &out, &errOut, false); code != 2 {
			t.Errorf("%s: exit %d, want 2 (%s)", u, code, errOut.String())
		}
	}
	for in, want := range map[string]string{
		"ws://localhost:9090":    "ws://127.0.0.1:9090/",
		"ws://127.0.0.5:1/x":     "ws://127.0.0.5:1/x",
		"ws://[::1]:9090/":       "ws://[::1]:9090/",
		"ws://LOCALHOST:80/path": "ws://127.0.0.1:80/path",
	} {
		got, err := checkURL(in)
		if err != nil || got != want {
			t.Errorf("checkURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut, false); code != 0 {
		t.Fatalf("exit %d", code)
	}
	cfg := &config{}
	fs := newFlagSet(cfg, &bytes.Buffer{})
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(errOut.String(), "  -"+f.Name+" ") {
			t.Errorf("-h does not document -%s", f.Name)
		}
	})
	if !strings.Contains(errOut.String(), "(default 20)") {
		t.Errorf("-h does not show defaults:\n%s", errOut.String())
	}
}

func TestPercentile(t *testing.T) {
	s := make([]int64, 100)
	for i := range s {
		s[i] = int64(100 - i) // 100..1, unsorted
	}
	l := summarize(s)
	if percentile(s, 50) != 50 || percentile(s, 90) != 90 || percentile(s, 99) != 99 || percentile(s, 100) != 100 || percentile(s, 99.9) != 100 || percentile(s, 1) != 1 {
		t.Errorf("nearest rank wrong: p50 %d p90 %d p99 %d p99.9 %d", percentile(s, 50), percentile(s, 90), percentile(s, 99), percentile(s, 99.9))
	}
	if got := percentile([]int64{7}, 99); got != 7 {
		t.Errorf("single sample: %d", got)
	}
	if l.Count != 100 || l.Max != 0.1 || l.P50 != 0.1 {
		t.Errorf("summary %+v", l)
	}
}

func TestParseFrame(t *testing.T) {
	var f frame
	in := []byte(` { "type" : "offer", "offer": {"p":3,"s":17,"t":123456,"x":"a\"}b"}, "name":"caller-1", "extra":[1,{"a":"]"}] }`)
	if !parseFrame(in, &f) {
		t.Fatal("parseFrame failed")
	}
	if string(f.typ) != "offer" || string(f.name) != "caller-1" {
		t.Errorf("type %q name %q", f.typ, f.name)
	}
	p, s, ts, ok := parsePayload(f.payload)
	if !ok || p != 3 || s != 17 || ts != 123456 {
		t.Errorf("payload %q: %d %d %d %v", f.payload, p, s, ts, ok)
	}
	for _, bad := range []string{"Hello world", "", "[]", `{"type":1}`, `{"type":"x"`, `{"type":"x",}`, `{"a":}`} {
		if parseFrame([]byte(bad), &f) {
			t.Errorf("parseFrame(%q) = true", bad)
		}
	}
	if !parseFrame([]byte(`{"type":"login","success":false}`), &f) || string(f.success) != "false" {
		t.Errorf("login frame: %q", f.success)
	}
	if _, _, _, ok := parsePayload([]byte(`{"p":1,"s":2}`)); ok {
		t.Error("payload without t accepted")
	}
	if got := string(appendJSONString(nil, "a\"\\\n\x01é")); got != `"a\"\\\u000a\u0001é"` {
		t.Errorf("appendJSONString: %s", got)
	}
}

func TestParseFrameAllocs(t *testing.T) {
	var f frame
	in := []byte(`{"type":"answer","answer":{"p":3,"s":17,"t":123456}}`)
	n := testing.AllocsPerRun(100, func() {
		parseFrame(in, &f)
		parsePayload(f.payload)
	})
	if n != 0 {
		t.Errorf("%v allocations per frame", n)
	}
}

// TestProfileStack drives an in-process stack hard, for profiling the
// server side with the test binary's own profiler (the servers have no
// profiling endpoint):
//
//	SIGNAL_BENCH_PROFILE=relay go test -run TestProfileStack -cpuprofile cpu.out ./cmd/signal-bench
//	go tool pprof -top -focus 'natsrtc/signal/(edge|registry)|nats-server' cpu.out
//
// SIGNAL_BENCH_PROFILE is relay, paced or logins; the test is skipped
// without it.
func TestProfileStack(t *testing.T) {
	mode := os.Getenv("SIGNAL_BENCH_PROFILE")
	if mode == "" {
		t.Skip("set SIGNAL_BENCH_PROFILE=relay|paced|logins to run")
	}
	s := stack.Start(t, stack.Options{Edges: 2})
	urls := s.Edges[0].URL + "," + s.Edges[1].URL
	switch mode {
	case "relay":
		runJSON(t, "relay", "-url", urls, "-pairs", "20", "-duration", "8s")
	case "paced":
		runJSON(t, "relay", "-url", urls, "-pairs", "20", "-rate", "2000", "-duration", "8s")
	case "logins":
		runJSON(t, "logins", "-url", urls, "-c", "32", "-duration", "8s")
	default:
		t.Fatalf("SIGNAL_BENCH_PROFILE=%q: want relay, paced or logins", mode)
	}
}
