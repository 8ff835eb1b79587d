package e2e_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/natsrtc/signal/edge/stack"
)

// Three tabs, each on its own edge, join one room: the demo page calls every
// member (a mesh: whoever joins later offers to those already there), every
// pair connects and media flows on all three connections. Then one tab
// closes: the other two hear "parted" and "leave" and keep their call.
func TestBrowserRoomMesh(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 3})
	b := startBrowser(t)
	names := []string{"ann", "ben", "cat"}
	tabs := make([]*tab, len(names))
	for i, n := range names {
		tabs[i] = b.open(t, n, pageURL(s.Edges[i].URL))
	}
	ann, ben, cat := tabs[0], tabs[1], tabs[2]
	for _, tb := range tabs {
		tb.waitFor(`signalDemo.socket === "open"`, "the signaling socket to open")
		tb.do(chromedp.Evaluate[chromedp.Void](`signalDemo.login(` + jsString(tb.name) + `)`))
	}
	for _, tb := range tabs {
		tb.waitFor(`signalDemo.loggedIn && signalDemo.media === "camera+microphone"`, "login and camera")
	}
	ann.do(chromedp.Evaluate[chromedp.Void](`signalDemo.watch(["ben", "cat", "nobody"])`))
	ann.waitFor(`(p => p.ben === true && p.cat === true && p.nobody === false)(signalDemo.presence())`, "presence of ben, cat and nobody")

	// One after the other, so that each pair has one offerer: the later.
	start := time.Now()
	for _, tb := range tabs {
		tb.do(chromedp.Evaluate[chromedp.Void](`signalDemo.join("standup")`))
		tb.waitFor(`signalDemo.room === "standup"`, "the join reply")
	}
	joined := time.Now()
	for _, tb := range tabs {
		tb.waitFor(meshIs(others(names, tb.name)...), "a connection to every other member")
	}
	t.Logf("all 3 pairs connected %v after the first join, %v after the last join reply (cat, the last to join, measured its join reply → connected to both: %d ms; its steps in ms after its join reply: %s)",
		time.Since(start).Round(time.Millisecond), time.Since(joined).Round(time.Millisecond),
		eval[int](cat, `signalDemo.meshConnectedMs`), eval[string](cat, `JSON.stringify(signalDemo.meshTimes)`))

	// The later joiner offered: ann answered both, cat offered to both.
	roles := map[string]map[string]string{
		"ann": {"ben": "answerer", "cat": "answerer"},
		"ben": {"ann": "offerer", "cat": "answerer"},
		"cat": {"ann": "offerer", "ben": "offerer"},
	}
	for _, tb := range tabs {
		got := eval[map[string]string](tb, `Object.fromEntries(signalDemo.meshPeers().map(p => [p.name, p.role]))`)
		for n, want := range roles[tb.name] {
			if got[n] != want {
				tb.fatalf("role toward %s: %q, want %q (all: %v)", n, got[n], want, got)
			}
		}
	}
	for _, tb := range tabs {
		tb.waitMeshFlowing(others(names, tb.name))
	}

	cat.close()
	for _, tb := range []*tab{ann, ben} {
		tb.waitFor(`signalDemo.roomLog.some(e => e.type === "parted" && e.name === "cat") && signalDemo.roomLog.some(e => e.type === "leave")`,
			"parted and leave from cat")
		tb.waitFor(meshIs(others(names[:2], tb.name)...), "the call with the other one only")
		if who := eval[[]any](tb, `signalDemo.roomLog.filter(e => e.type === "leave").map(e => e.name)`); slices.ContainsFunc(who, func(n any) bool { return n != nil && n != "cat" }) {
			tb.fatalf("leave taken as coming from %v, want cat or nobody in particular", who)
		}
		if st := eval[string](tb, `signalDemo.state + " " + signalDemo.members().join(",")`); st != "room "+others(names[:2], tb.name)[0] {
			tb.fatalf("state and members %q after cat left", st)
		}
	}
	ann.waitFor(`signalDemo.presence().cat === false`, "cat to go offline")
	for _, tb := range []*tab{ann, ben} {
		tb.waitMeshFlowing(others(names[:2], tb.name))
	}
}

// others is names without name.
func others(names []string, name string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == name })
}

// meshIs is a JavaScript condition: the page's room connections are exactly
// to names, each connected.
func meshIs(names ...string) string {
	return fmt.Sprintf(`(ps => ps.length === %d && ps.every(p => p.connection === "connected" && %s.includes(p.name)))(signalDemo.meshPeers())`,
		len(names), jsStrings(names))
}

// jsStrings is a JavaScript array literal of ss.
func jsStrings(ss []string) string {
	b, _ := json.Marshal(ss)
	return string(b)
}

// waitMeshFlowing waits until the inbound RTP bytes of the room connection
// to each of names grow between two getStats samples.
func (tb *tab) waitMeshFlowing(names []string) {
	tb.t.Helper()
	deadline := time.Now().Add(step)
	first := eval[map[string]int64](tb, `signalDemo.meshBytes()`)
	for {
		time.Sleep(200 * time.Millisecond) // between two samples; the deadline bounds the wait
		n := eval[map[string]int64](tb, `signalDemo.meshBytes()`)
		grew := true
		for _, name := range names {
			if first[name] == 0 || n[name] <= first[name] {
				grew = false
			}
		}
		if grew {
			tb.t.Logf("%s: inbound RTP bytes %v → %v", tb.name, first, n)
			return
		}
		if time.Now().After(deadline) {
			tb.fatalf("media not flowing from every one of %v: inbound RTP bytes %v → %v in %v", names, first, n, step)
		}
		first = n
	}
}
