package edge

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/natsrtc/signal/services/events"
)

var jsonStringCases = []string{
	"", "alice", "Zoë", "名前", `quote " and \ backslash`, "<script>&amp;</script>",
	"\b\f\n\r\t\x00\x01\x1f\x7f", "line\u2028sep\u2029par", "bad \xff\xfe utf-8 \xc3", "\xe2\x80",
	"emoji 🎉", "a/b", "\u0080\u009f",
}

// TestCallEventJSON: appendCallEvent writes what events.Msg writes with
// encoding/json, byte for byte.
func TestCallEventJSON(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 12, 1, 22, 38, 18, 28205707, time.UTC),
		time.Date(2026, 12, 1, 22, 38, 18, 0, time.UTC),
		time.Date(2026, 12, 1, 22, 38, 18, 120000000, time.UTC),
		time.Now().UTC(),
	}
	for _, s := range jsonStringCases {
		for _, tm := range times {
			for _, ev := range []events.Event{
				{Kind: events.KindCallStart, Name: s, Edge: "edge-1", Time: tm, Peer: "bob"},
				{Kind: events.KindCallEnd, Name: "alice", Edge: s, Time: tm, Peer: s, Reason: events.ReasonLeave},
				{Kind: events.KindCallStart, Name: "alice", Edge: "e", Time: tm},
			} {
				checkCallEvent(t, ev)
			}
		}
	}
}

func checkCallEvent(t testing.TB, ev events.Event) {
	t.Helper()
	want := events.Msg(ev, "tok", "").Data
	got := appendCallEvent(nil, ev.Kind, ev.Name, ev.Edge, ev.Time, ev.Reason, ev.Peer)
	if !bytes.Equal(got, want) {
		t.Fatalf("appendCallEvent(%+v)\n got %s\nwant %s", ev, got, want)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStringCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
		checkCallEvent(t, events.Event{Kind: events.KindCallStart, Name: s, Edge: "e", Time: time.Unix(1, 5).UTC(), Peer: s})
	})
}

// TestCallEventAllocs: a call event costs no allocation once the
// connection's subjects are made.
func TestCallEventAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race")
	}
	b := make([]byte, 0, 256)
	now := time.Now().UTC()
	if n := testing.AllocsPerRun(1000, func() {
		b = appendCallEvent(b[:0], events.KindCallStart, "alice", "edge-1", now, "", "bob")
	}); n > 0 {
		t.Errorf("appendCallEvent: %.1f allocations, want 0", n)
	}
}
