package edge

import "testing"

func TestParseTrack(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want trackPos
		ok   bool
	}{
		{"12:3", trackPos{12, 3}, true},
		{"1:9999999999999999999", trackPos{1, 9999999999999999999}, true},
		{"0:1", trackPos{0, 1}, true},
		{"5:0", trackPos{}, false}, // m counts from 1
		{"", trackPos{}, false},
		{":1", trackPos{}, false},
		{"1:", trackPos{}, false},
		{"1", trackPos{}, false},
		{"a:1", trackPos{}, false},
		{"1:1a", trackPos{}, false},
		{"1:2:3", trackPos{}, false},
		{"12345678901234567890:1", trackPos{}, false},
		{"1:12345678901234567890", trackPos{}, false},
	} {
		got, ok := parseTrack(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseTrack(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if gb, okb := parseTrack([]byte(tt.in)); gb != got || okb != ok {
			t.Errorf("parseTrack([]byte(%q)) = %v, %v; the string gave %v, %v", tt.in, gb, okb, got, ok)
		}
	}
}

// TestTracked: a session counts the frames missing on a sender's route,
// starts again on a newer route, and takes older or repeated frames
// (handed over, reordered) as they come, without a report.
func TestTracked(t *testing.T) {
	s := &session{}
	f := func(seq string, route, m uint64) *keptFrame {
		return &keptFrame{seq: seq, track: trackPos{route, m}}
	}
	for i, step := range []struct {
		f    *keptFrame
		lost uint64
	}{
		{f("s1:5", 5, 1), 0},   // first seen: nothing known before it
		{f("s1:6", 5, 2), 0},   // next
		{f("s1:9", 5, 4), 1},   // m 3 never came
		{f("s1:8", 5, 3), 0},   // late (reordered): nothing
		{f("s1:9", 5, 4), 0},   // repeated
		{f("s2:1", 1, 3), 0},   // another sender: its own route
		{f("s2:2", 1, 6), 2},   // m 4 and 5 missing
		{f("s1:20", 20, 1), 0}, // s1 began a newer route (its cache let bob go)
		{f("s1:21", 20, 2), 0},
		{f("s1:12", 5, 9), 0}, // the older route: nothing
		{f("s1:22", 20, 3), 0},
		{f("bad", 20, 9), 0}, // no sender
	} {
		if got := s.tracked(step.f); got != step.lost {
			t.Fatalf("step %d (%+v): %d lost, want %d", i, *step.f, got, step.lost)
		}
	}
	// The senders followed are bounded.
	for i := range 3 * maxTracks {
		s.tracked(f("x"+uitoa(uint64(i))+":1", 1, 1))
		if len(s.tracks) > maxTracks {
			t.Fatalf("%d senders followed, bound %d", len(s.tracks), maxTracks)
		}
	}
}

func TestParseTrackAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s, b := "123:456", []byte("123:456")
	if n := testing.AllocsPerRun(100, func() { _, _ = parseTrack(s); _, _ = parseTrack(b) }); n != 0 {
		t.Fatalf("parseTrack: %.1f allocations, want 0", n)
	}
}
