package e2e_test

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

// signal.js on its own, in a tab, with Go clients for the other users: a
// room and the names it gives to answers, candidates and leave (which carry
// none), offers to several users one at a time, presence, a drop resumed
// with a frame queued meanwhile, and an edge going away (a fresh login that
// joins the room and watches again).
func TestSignalJS(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	first := startEdge(t, s, "edge-a", ln)
	proxy := startProxy(t, addr)
	url := "ws://" + addr + "/"
	gus := login(t, url, "gus")
	hal := login(t, url, "hal")
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	recv := func(c *client.Client, who, typ string) client.Message {
		t.Helper()
		m, err := c.Recv(ctx)
		if err != nil || m.Type != typ {
			t.Fatalf("%s: %v %s; want a %s frame", who, err, m.Raw, typ)
		}
		return m
	}
	for _, c := range []*client.Client{gus, hal} {
		if _, err := c.Join(ctx, "r"); err != nil {
			t.Fatal(err)
		}
	}
	recv(gus, "gus", "joined")

	b := startBrowser(t)
	ann := b.open(t, "ann", "http://"+proxy.addr()+"/signal.js")
	// got holds every event's type and detail; last(type) the latest.
	users := eval[[]string](ann, `(async () => {
		const { Signal } = await import('/signal.js');
		const sig = new Signal(undefined, { minDelay: 50, maxDelay: 500 });
		window.sig = sig;
		window.got = [];
		for (const type of ['login', 'close', 'offer', 'answer', 'candidate', 'leave', 'message', 'join', 'joined', 'parted', 'presence', 'error']) {
			sig.on(type, (d) => got.push({ event: type, ...d }));
		}
		window.last = (type) => got.filter((e) => e.event === type).at(-1);
		await sig.login('ann', { resumable: true });
		sig.watch('gus', 'nobody');
		return await sig.join('r');
	})()`)
	if slices.Sort(users); !slices.Equal(users, []string{"gus", "hal"}) {
		t.Fatalf("join reply users %v, want gus and hal", users)
	}
	for _, c := range []*client.Client{gus, hal} {
		recv(c, "member", "joined")
	}
	ann.waitFor(`sig.presence.get("gus") === true && sig.presence.get("nobody") === false`, "presence")

	// Two offers: hal's waits for gus's answer, and a candidate for hal
	// waits behind it.
	ann.do(chromedp.Evaluate[chromedp.Void](`sig.offer("gus", {type: "offer", sdp: "v=0\r\na=ice-ufrag:annG\r\n"});
		sig.offer("hal", {type: "offer", sdp: "v=0\r\na=ice-ufrag:annH\r\n"});
		sig.candidate("hal", {candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", usernameFragment: "annH"})`))
	if m := recv(gus, "gus", "offer"); m.Name != "ann" {
		t.Fatalf("gus: %s", m.Raw)
	}
	if err := gus.Answer("ann", json.RawMessage(`{"type":"answer","sdp":"v=0\r\na=ice-ufrag:gusU\r\n"}`)); err != nil {
		t.Fatal(err)
	}
	ann.waitFor(`last("answer")?.name === "gus"`, "gus's answer, named")
	recv(hal, "hal", "offer")
	recv(hal, "hal", "candidate")
	if err := hal.Answer("ann", json.RawMessage(`{"type":"answer","sdp":"v=0\r\na=ice-ufrag:halU\r\n"}`)); err != nil {
		t.Fatal(err)
	}
	ann.waitFor(`last("answer")?.name === "hal"`, "hal's answer, named")
	for _, c := range []struct {
		c    *client.Client
		name string
	}{{gus, "gus"}, {hal, "hal"}, {gus, "gus"}} {
		cand := `{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host ufrag ` + c.name + `U","sdpMid":"0"}`
		if err := c.c.Candidate("ann", json.RawMessage(cand)); err != nil {
			t.Fatal(err)
		}
		ann.waitFor(`(c => c && c.name === `+jsString(c.name)+` && c.candidate.candidate.includes(`+jsString(c.name+"U")+`))(last("candidate"))`, c.name+"'s candidate, named")
		ann.do(chromedp.Evaluate[chromedp.Void](`got = got.filter((e) => e.event !== "candidate")`))
	}
	if p := eval[[]string](ann, `[...sig.peers].sort()`); !slices.Equal(p, []string{"gus", "hal"}) {
		t.Fatalf("peers %v", p)
	}

	// gus parts and closes: his session's leave is his.
	if err := gus.Part(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	recv(hal, "hal", "parted")
	if err := gus.Close(); err != nil {
		t.Fatal(err)
	}
	ann.waitFor(`last("parted")?.name === "gus" && last("leave") && sig.presence.get("gus") === false`, "parted, leave and presence of gus")
	if who := eval[any](ann, `last("leave").name ?? null`); who != nil && who != "gus" {
		t.Fatalf("leave named %v, want gus (or no name)", who)
	}
	ann.waitFor(`[...sig.peers].join() === "hal" && [...sig.rooms.get("r")].join() === "hal"`, "hal the only peer and member")

	// A drop (no close frame) is resumed; what was sent meanwhile, both
	// ways, arrives.
	ann.do(chromedp.Evaluate[chromedp.Void](`window.queued = new Promise((resolve) => sig.addEventListener("close", () => resolve(sig.roomMessage("r", "sent while away")), { once: true }))`))
	proxy.cut()
	if !eval[bool](ann, `queued`) {
		t.Fatal("roomMessage while resuming was not queued")
	}
	if err := hal.Message("ann", "while you were away"); err != nil {
		t.Fatal(err)
	}
	ann.waitFor(`last("login")?.resumed === true && sig.loggedIn`, "the resume")
	if m := recv(hal, "hal", "message"); m.Room != "r" || m.Name != "ann" || string(m.Data) != `"sent while away"` {
		t.Fatalf("hal: %s", m.Raw)
	}
	ann.waitFor(`last("message")?.name === "hal" && last("message").data === "while you were away"`, "hal's message, kept during the drop")
	if c := eval[int](ann, `last("close").code`); c != 1006 {
		t.Fatalf("close code %d, want 1006", c)
	}

	// The edge goes away (1001): its sessions end. signal.js logs in
	// afresh on the next edge at that address, joins the room again and
	// watches again.
	sctx, scancel := context.WithTimeout(context.Background(), step)
	defer scancel()
	if err := first.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	ann.waitFor(`got.some((e) => e.event === "close" && e.code === 1001 && e.reconnecting)`, "1001")
	startEdge(t, s, "edge-b", listenAgain(t, addr))
	ann.waitFor(`last("login")?.resumed === false && last("login").reconnected && last("join")?.rejoin === true`, "a fresh login and the room joined again")
	if u := eval[[]string](ann, `last("join").users`); len(u) != 0 {
		// hal was on the edge that went away too.
		t.Fatalf("members after the re-join: %v, want none", u)
	}
	if p := eval[int](ann, `sig.peers.size`); p != 0 {
		t.Fatalf("%d peers after a fresh login, want none", p)
	}
	hal2 := login(t, url, "hal")
	if users, err := hal2.Join(ctx, "r"); err != nil || !slices.Equal(users, []string{"ann"}) {
		t.Fatalf("hal joins again: %v %v; want [ann]", users, err)
	}
	ann.waitFor(`last("joined")?.name === "hal" && sig.rooms.get("r").has("hal")`, "hal joining again")
}
