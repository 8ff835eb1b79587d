package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/proctest"
)

// Browser tests drive the demo page (edge/web) in headless Chromium: Debian's
// "chromium" package, or the binary named by $SIGNAL_CHROMIUM. Without a
// browser they skip, except under CI=true, where they fail.
//
// SIGNAL_UPDATE_SCREENSHOT=1 rewrites edge/web/screenshot.png, the caller's
// page mid-call; otherwise the screenshot goes to the test's temp directory.

// A call between two tabs, each on its own edge: log in through the form,
// call, both RTCPeerConnections connect and receive media, then one tab
// closes and the other shows that the call ended.
func TestBrowserCallAcrossEdges(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	b := startBrowser(t)
	alice := b.open(t, "alice", pageURL(s.Edges[0].URL))
	bob := b.open(t, "bob", pageURL(s.Edges[1].URL))

	for _, tb := range []*tab{alice, bob} {
		tb.waitFor(`signalDemo.socket === "open"`, "the signaling socket to open")
		tb.do(
			chromedp.SendKeys(chromedp.CSS(`[data-testid=name]`), tb.name),
			chromedp.Click(chromedp.CSS(`[data-testid=login]`)),
		)
	}
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor(`signalDemo.loggedIn && signalDemo.state === "idle" && signalDemo.media !== "pending"`, "login and camera")
		if media := eval[string](tb, `signalDemo.media`); media != "camera+microphone" {
			tb.fatalf("local media %q, want camera+microphone (the fake devices)", media)
		}
	}

	alice.do(
		chromedp.SendKeys(chromedp.CSS(`[data-testid=peer]`), "bob"),
		chromedp.Click(chromedp.CSS(`[data-testid=call]`)),
	)
	called := time.Now()
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor(`signalDemo.pc && signalDemo.pc.connectionState === "connected" && signalDemo.state === "in-call"`, "the call to connect")
	}
	connected := time.Since(called)
	t.Logf("call → both RTCPeerConnections connected: %v (the page measured offer → connected: caller %d ms, callee %d ms)",
		connected.Round(time.Millisecond), eval[int](alice, `signalDemo.callToConnectedMs`), eval[int](bob, `signalDemo.callToConnectedMs`))

	// The callee saw the incoming call.
	if from := eval[string](bob, `signalDemo.incoming && signalDemo.incoming.from`); from != "alice" {
		bob.fatalf("incoming call from %q, want alice", from)
	}
	if n := eval[string](bob, `document.querySelector("[data-testid=call-info]").textContent`); !strings.Contains(n, "Incoming call from alice") {
		bob.fatalf("call info %q does not show the incoming call", n)
	}

	// Media flows both ways: bytes received grow between two samples.
	for _, tb := range []*tab{alice, bob} {
		tb.waitMediaFlowing()
	}
	t.Logf("call → media flowing both ways: %v", time.Since(called).Round(time.Millisecond))

	// The caller's page mid-call, once the remote video shows frames.
	alice.waitFor(`document.querySelector("[data-testid=remote-video]").videoWidth > 0 && document.querySelector("[data-testid=local-video]").videoWidth > 0`, "both videos to play")
	// A few more frames, so that the picture is not the first one.
	const frames = `document.querySelector("[data-testid=remote-video]").getVideoPlaybackQuality().totalVideoFrames`
	shown := eval[int64](alice, frames)
	alice.waitFor(fmt.Sprintf("%s >= %d", frames, shown+8), "eight more remote video frames")
	png, err := chromedp.Run(alice.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		alice.fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "screenshot.png")
	if os.Getenv("SIGNAL_UPDATE_SCREENSHOT") == "1" {
		shot = filepath.Join("..", "web", "screenshot.png")
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the caller: %s (%d bytes)", shot, len(png))

	// Closing the callee's tab ends its socket; its edge tells alice.
	bob.close()
	alice.waitFor(`signalDemo.state === "ended" && signalDemo.reason === "bob left"`, "the call to end")
	if st := eval[string](alice, `document.querySelector("[data-testid=status]").textContent`); !strings.Contains(st, "call ended: bob left") {
		alice.fatalf("status line %q does not show the end of the call", st)
	}
	if pc := eval[string](alice, `signalDemo.pc.connectionState`); pc != "closed" {
		alice.fatalf("peer connection %q after leave, want closed", pc)
	}
}

// An edge that shuts down closes its sockets with 1001 (going away); the
// page reconnects to the same address, where a new edge now listens, and
// logs in again with the same name.
func TestBrowserReconnectsAfterGoingAway(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	first := startEdge(t, s, "edge-a", ln)

	b := startBrowser(t)
	carol := b.open(t, "carol", pageURL("ws://"+addr+"/"))
	carol.waitFor(`signalDemo.socket === "open"`, "the signaling socket to open")
	carol.do(chromedp.Evaluate[chromedp.Void](`signalDemo.login("carol")`))
	carol.waitFor(`signalDemo.loggedIn && signalDemo.name === "carol"`, "login")

	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	carol.waitFor(`signalDemo.closes.length > 0 && !signalDemo.loggedIn`, "the socket to close")
	if code := eval[int](carol, `signalDemo.closes[0].code`); code != 1001 {
		carol.fatalf("close code %d, want 1001", code)
	}

	ln2 := listenAgain(t, addr)
	startEdge(t, s, "edge-b", ln2)
	carol.waitFor(`signalDemo.loggedIn && signalDemo.name === "carol" && signalDemo.logins === 2`, "the page to log in again")
	t.Logf("reconnected after %d socket closes", eval[int](carol, `signalDemo.closes.length`))

	// The name is held again, by the page.
	c, err := client.Dial(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m, err := c.Login(ctx, "carol"); !errors.Is(err, client.ErrNameTaken) {
		t.Fatalf("a second login as carol: %v (%s); want it refused", err, m.Raw)
	}
}

// A signaling connection that drops (no close frame: a lost network) does
// not end the call: the edge holds the session, the page reconnects and logs
// in with its resume token, and the call goes on; its signaling too.
func TestBrowserCallSurvivesDroppedSignaling(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	proxy := startProxy(t, strings.TrimSuffix(strings.TrimPrefix(s.Edges[0].URL, "ws://"), "/"))
	b := startBrowser(t)
	alice := b.open(t, "alice", "http://"+proxy.addr()+"/")
	bob := b.open(t, "bob", pageURL(s.Edges[1].URL))
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor(`signalDemo.socket === "open"`, "the signaling socket to open")
		tb.do(chromedp.Evaluate[chromedp.Void](`signalDemo.login(` + jsString(tb.name) + `)`))
		tb.waitFor(`signalDemo.loggedIn && signalDemo.media !== "pending"`, "login and camera")
	}
	alice.do(chromedp.Evaluate[chromedp.Void](`signalDemo.call("bob")`))
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor(`signalDemo.state === "in-call"`, "the call to connect")
	}

	proxy.cut()
	alice.waitFor(`signalDemo.closes.length > 0`, "the socket to drop")
	if code := eval[int](alice, `signalDemo.closes[0].code`); code != 1006 {
		alice.fatalf("close code %d, want 1006 (dropped)", code)
	}
	alice.waitFor(`signalDemo.resumes === 1 && signalDemo.loggedIn`, "the session to resume")
	for _, tb := range []*tab{alice, bob} {
		if st := eval[string](tb, `signalDemo.state`); st != "in-call" {
			tb.fatalf("state %q after the resume, want in-call", st)
		}
		tb.waitMediaFlowing()
	}

	// Signaling still reaches the resumed session.
	bob.do(chromedp.Evaluate[chromedp.Void](`signalDemo.hangup()`))
	alice.waitFor(`signalDemo.state === "ended" && signalDemo.reason === "bob left"`, "bob's leave")
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// tcpProxy forwards TCP connections to target; cut drops them all at once,
// with a reset and no WebSocket close frame, as a lost network would.
type tcpProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.pipe(c)
	}
}

func (p *tcpProxy) pipe(c net.Conn) {
	defer p.wg.Done()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// cut resets every forwarded connection, both sides.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// startEdge serves an edge on ln for the duration of t.
func startEdge(t *testing.T, s *stack.Stack, id string, ln net.Listener) *edge.Edge {
	t.Helper()
	e, err := edge.New(edge.Config{NC: s.Conn(id), ID: id, Listen: ln.Addr().String(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}

// listenAgain listens on addr, which a listener just closed.
func listenAgain(t *testing.T, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(step)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pageURL is the page of the edge with WebSocket URL u.
func pageURL(u string) string { return "http" + strings.TrimPrefix(u, "ws") }

// chromium finds the browser: $SIGNAL_CHROMIUM, chromium in PATH, or
// /usr/bin/chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SIGNAL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	const msg = "no Chromium (chromium in PATH, /usr/bin/chromium or $SIGNAL_CHROMIUM); on Debian: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// browser is one headless Chromium for one test.
type browser struct {
	ctx context.Context // of the first tab, which owns the browser
	out *syncBuffer     // the browser's stdout and stderr
	n   int             // tabs opened
}

// syncBuffer collects a child process's output.
type syncBuffer = proctest.Buffer

func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium(t)
	out := &syncBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.CombinedOutput(out),
		// chromedp passes a new temporary --user-data-dir and removes it
		// when the browser has stopped.
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
		// Camera and microphone: granted without a prompt, and fake (a
		// test pattern and a beep), so no device is needed.
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		// WebRTC on loopback, with plain IP host candidates instead of
		// mDNS .local names (nothing resolves those offline).
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		// Play the remote video (with sound) without a click.
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// Two tabs at once: keep the hidden one at full speed.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1100, 760),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_ = chromedp.Cancel(cctx)
		cancel()
		acancel()
	})
	// The first Run starts the browser; its context must have no timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", path, err, out)
	}
	b := &browser{ctx: ctx, out: out}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser output:\n%s", out)
		}
	})
	return b
}

// tab is one page of the browser.
type tab struct {
	t      *testing.T
	b      *browser
	name   string
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	console []string
	wg      sync.WaitGroup
}

// open opens url in a tab (the browser's first tab, then new ones).
func (b *browser) open(t *testing.T, name, url string) *tab {
	t.Helper()
	tb := &tab{t: t, b: b, name: name}
	if b.n == 0 {
		tb.ctx, tb.cancel = b.ctx, func() {}
	} else {
		tb.ctx, tb.cancel = chromedp.NewContext(b.ctx)
		if err := chromedp.Do(tb.ctx); err != nil {
			t.Fatalf("%s: opening a tab: %v", name, err)
		}
	}
	b.n++
	lctx, lcancel := context.WithCancel(tb.ctx)
	msgs := chromedp.Console(lctx)
	tb.wg.Add(1)
	go func() {
		defer tb.wg.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.console = append(tb.console, m.String())
			tb.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lcancel()
		tb.wg.Wait()
		if t.Failed() {
			tb.dump()
		}
	})
	tb.do(chromedp.Navigate(url))
	return tb
}

// close closes the tab, as a user closing it would.
func (tb *tab) close() {
	tb.t.Helper()
	if tb.ctx == tb.b.ctx {
		tb.t.Fatal("the first tab owns the browser; close another one")
	}
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	done := make(chan struct{})
	go func() { tb.cancel(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		tb.fatalf("closing the tab took over %v", step)
	}
}

// do runs actions in the tab, each run bounded by step.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, step)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.fatalf("%v", err)
	}
}

// eval evaluates a JavaScript expression in the tab (awaiting a promise).
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, step)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the expression is true in the tab.
func (tb *tab) waitFor(expr, what string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, step+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(step)))
	if err != nil {
		tb.fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// waitMediaFlowing waits until the bytes of all inbound RTP streams grow
// between two getStats samples.
func (tb *tab) waitMediaFlowing() {
	tb.t.Helper()
	const sample = `(async () => {
		let n = 0;
		(await signalDemo.pc.getStats()).forEach((r) => { if (r.type === "inbound-rtp") n += r.bytesReceived || 0; });
		return n;
	})()`
	deadline := time.Now().Add(step)
	first := eval[int64](tb, sample)
	for {
		time.Sleep(200 * time.Millisecond)
		n := eval[int64](tb, sample)
		if n > first && first > 0 {
			tb.t.Logf("%s: inbound RTP bytes %d → %d", tb.name, first, n)
			return
		}
		if time.Now().After(deadline) {
			tb.fatalf("no media received: inbound RTP bytes %d → %d in %v", first, n, step)
		}
		first = n
	}
}

func (tb *tab) fatalf(format string, args ...any) {
	tb.t.Helper()
	tb.t.Fatalf("%s: %s", tb.name, fmt.Sprintf(format, args...))
}

// dump logs what the page logged, for a failed test.
func (tb *tab) dump() {
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](`JSON.stringify({state: signalDemo.state, socket: signalDemo.socket, errors: signalDemo.errors, events: signalDemo.events})`))
	var page string
	if err == nil {
		_ = json.Unmarshal(raw, &page)
	} else {
		page = err.Error()
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.t.Logf("%s: page: %s\nconsole:\n%s", tb.name, page, strings.Join(tb.console, "\n"))
}
