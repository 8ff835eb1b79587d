package protocol

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppenders(t *testing.T) {
	offer := []byte(`{ "type" : "offer", "sdp":"v=0\r\n" }`)
	tests := []struct {
		name string
		got  []byte
		want string
		typ  Type
		m    map[string]any // expected decoding by encoding/json
	}{
		{"offer", AppendOffer(nil, offer, []byte("alice")),
			`{"type":"offer","offer":{ "type" : "offer", "sdp":"v=0\r\n" },"name":"alice"}`, TypeOffer,
			map[string]any{"type": "offer", "offer": map[string]any{"type": "offer", "sdp": "v=0\r\n"}, "name": "alice"}},
		{"offer escaped name", AppendOffer(nil, []byte(`"x"`), []byte("李\"雷\n")),
			`{"type":"offer","offer":"x","name":"李\"雷\n"}`, TypeOffer,
			map[string]any{"type": "offer", "offer": "x", "name": "李\"雷\n"}},
		{"offer empty payload", AppendOffer(nil, nil, nil),
			`{"type":"offer","offer":null,"name":""}`, TypeOffer,
			map[string]any{"type": "offer", "offer": nil, "name": ""}},
		{"answer", AppendAnswer(nil, []byte(`[1, 2 ]`)),
			`{"type":"answer","answer":[1, 2 ]}`, TypeAnswer,
			map[string]any{"type": "answer", "answer": []any{1.0, 2.0}}},
		{"candidate", AppendCandidate(nil, []byte(`{"candidate":"c","sdpMLineIndex":0}`)),
			`{"type":"candidate","candidate":{"candidate":"c","sdpMLineIndex":0}}`, TypeCandidate,
			map[string]any{"type": "candidate", "candidate": map[string]any{"candidate": "c", "sdpMLineIndex": 0.0}}},
		{"candidate null", AppendCandidate(nil, []byte(`null`)),
			`{"type":"candidate","candidate":null}`, TypeCandidate,
			map[string]any{"type": "candidate", "candidate": nil}},
		{"leave", AppendLeave(nil), `{"type":"leave"}`, TypeLeave,
			map[string]any{"type": "leave"}},
		{"login true", AppendLogin(nil, true), `{"type":"login","success":true}`, TypeLogin,
			map[string]any{"type": "login", "success": true}},
		{"login false", AppendLogin(nil, false), `{"type":"login","success":false}`, TypeLogin,
			map[string]any{"type": "login", "success": false}},
		{"login extra", AppendLoginExtra(nil, true, "token", []byte(`"abc"`)),
			`{"type":"login","success":true,"token":"abc"}`, TypeLogin,
			map[string]any{"type": "login", "success": true, "token": "abc"}},
		{"login extra false", AppendLoginExtra(nil, false, "retry", []byte(`5`)),
			`{"type":"login","success":false,"retry":5}`, TypeLogin,
			map[string]any{"type": "login", "success": false, "retry": 5.0}},
		{"login extra escaped key", AppendLoginExtra(nil, true, "a\"b", nil),
			`{"type":"login","success":true,"a\"b":null}`, TypeLogin,
			map[string]any{"type": "login", "success": true, "a\"b": nil}},
		{"error", AppendError(nil, `user "bob" not found`),
			`{"type":"error","message":"user \"bob\" not found"}`, TypeUnknown,
			map[string]any{"type": "error", "message": `user "bob" not found`}},
		{"error control", AppendError(nil, "a\x00\u2028"),
			`{"type":"error","message":"a\u0000\u2028"}`, TypeUnknown,
			map[string]any{"type": "error", "message": "a\x00\u2028"}},
		{"message", AppendMessage(nil, []byte("alice"), []byte(`{"t":"hi"}`)),
			`{"type":"message","name":"alice","data":{"t":"hi"}}`, TypeMessage,
			map[string]any{"type": "message", "name": "alice", "data": map[string]any{"t": "hi"}}},
		{"room message", AppendRoomMessage(nil, []byte("a.b"), []byte("李"), []byte(`7`)),
			`{"type":"message","room":"a.b","name":"李","data":7}`, TypeMessage,
			map[string]any{"type": "message", "room": "a.b", "name": "李", "data": 7.0}},
		{"join ok", AppendJoinOK(nil, []byte("r"), []string{"a", "b\""}),
			`{"type":"join","success":true,"room":"r","users":["a","b\""]}`, TypeUnknown,
			map[string]any{"type": "join", "success": true, "room": "r", "users": []any{"a", "b\""}}},
		{"join ok empty", AppendJoinOK(nil, []byte("r"), nil),
			`{"type":"join","success":true,"room":"r","users":[]}`, TypeUnknown,
			map[string]any{"type": "join", "success": true, "room": "r", "users": []any{}}},
		{"join refused", AppendRoomReply(nil, "join", false, []byte("r"), "room is full"),
			`{"type":"join","success":false,"room":"r","message":"room is full"}`, TypeUnknown,
			map[string]any{"type": "join", "success": false, "room": "r", "message": "room is full"}},
		{"part ok", AppendRoomReply(nil, "part", true, []byte("r"), ""),
			`{"type":"part","success":true,"room":"r"}`, TypeUnknown,
			map[string]any{"type": "part", "success": true, "room": "r"}},
		{"joined", AppendJoined(nil, []byte("r"), []byte("bob")),
			`{"type":"joined","room":"r","name":"bob"}`, TypeUnknown,
			map[string]any{"type": "joined", "room": "r", "name": "bob"}},
		{"parted", AppendParted(nil, []byte("r"), []byte("bob")),
			`{"type":"parted","room":"r","name":"bob"}`, TypeUnknown,
			map[string]any{"type": "parted", "room": "r", "name": "bob"}},
		{"presence", AppendPresence(nil, []byte("bob"), false),
			`{"type":"presence","name":"bob","online":false}`, TypeUnknown,
			map[string]any{"type": "presence", "name": "bob", "online": false}},
		{"append to existing dst", AppendLeave([]byte("prefix:")), `prefix:{"type":"leave"}`, TypeUnknown, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Fatalf("got  %s\nwant %s", tc.got, tc.want)
			}
			if typ := FrameType(tc.got); typ != tc.typ {
				t.Errorf("FrameType = %v, want %v", typ, tc.typ)
			}
			if tc.m == nil {
				return
			}
			var m map[string]any
			if err := json.Unmarshal(tc.got, &m); err != nil {
				t.Fatalf("output is not valid JSON: %v", err)
			}
			if !reflect.DeepEqual(m, tc.m) {
				t.Errorf("decoded %#v, want %#v", m, tc.m)
			}
		})
	}
}

// TestAppendParseRoundTrip relays parsed payloads through the appenders and
// parses the result again: payloads survive byte for byte.
func TestAppendParseRoundTrip(t *testing.T) {
	var in, out Frame
	for _, tc := range parseCases {
		if tc.err != nil || tc.payload == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if err := Parse([]byte(tc.in), &in); err != nil {
				t.Fatal(err)
			}
			var frame []byte
			switch in.Type {
			case TypeOffer:
				frame = AppendOffer(nil, in.Payload, []byte("sender \u674e"))
			case TypeAnswer:
				frame = AppendAnswer(nil, in.Payload)
			case TypeCandidate:
				frame = AppendCandidate(nil, in.Payload)
			case TypeMessage:
				if in.Room != nil {
					frame = AppendRoomMessage(nil, in.Room, []byte("sender \u674e"), in.Payload)
				} else {
					frame = AppendMessage(nil, []byte("sender \u674e"), in.Payload)
				}
			default:
				return // watch, unwatch: not relayed
			}
			if FrameType(frame) != in.Type {
				t.Fatalf("FrameType = %v, want %v", FrameType(frame), in.Type)
			}
			if err := Parse(frame, &out); err != nil {
				t.Fatal(err)
			}
			if out.Type != in.Type || !bytes.Equal(out.Payload, []byte(*tc.payload)) {
				t.Fatalf("round trip changed payload or type: %v", out.Type)
			}
			if (in.Type == TypeOffer || in.Type == TypeMessage) && string(out.Name) != "sender \u674e" {
				t.Fatalf("Name = %q", out.Name)
			}
		})
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", `""`},
		{"plain", "hello world", `"hello world"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"slash not escaped", "a/b", `"a/b"`},
		{"named controls", "\n\r\t", `"\n\r\t"`},
		{"other controls", "\x00\x01\x08\x0c\x1f", `"\u0000\u0001\u0008\u000c\u001f"`},
		{"DEL kept", "\x7f", "\"\x7f\""},
		{"html kept", "<a&b>", `"<a&b>"`},
		{"unicode kept", "李雷 café 🙂", `"李雷 café 🙂"`},
		{"line separators", "a\u2028b\u2029c", `"a\u2028b\u2029c"`},
		{"U+2027 and U+202A kept", "\u2027\u202a", "\"\u2027\u202a\""},
		{"invalid byte", "a\xffb", `"a\ufffdb"`},
		{"truncated rune", "a\xe6\x9d", `"a\ufffd\ufffd"`},
		{"encoded surrogate", "\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`},
		{"overlong", "\xc0\xaf", `"\ufffd\ufffd"`},
		{"valid U+FFFD kept", "\uFFFD", "\"\uFFFD\""},
		{"max rune", "\U0010FFFF", "\"\U0010FFFF\""},
		{"beyond max rune", "\xf4\x90\x80\x80", `"\ufffd\ufffd\ufffd\ufffd"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendString(nil, []byte(tc.in))
			if string(got) != tc.want {
				t.Fatalf("AppendString(%q) = %s, want %s", tc.in, got, tc.want)
			}
			if gotStr := appendString(nil, tc.in); !bytes.Equal(gotStr, got) {
				t.Fatalf("string variant = %s, want %s", gotStr, got)
			}
			checkAppendString(t, []byte(tc.in), got)
		})
	}
}

// checkAppendString checks out = AppendString(nil, s) against encoding/json:
// the output is valid JSON, decodes to the same string encoding/json decodes
// from its own encoding of s (equal to s itself when s is valid UTF-8), and
// contains no raw control characters, U+2028 or U+2029.
func checkAppendString(t testing.TB, s, out []byte) {
	t.Helper()
	var got string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("AppendString(%q) = %q: not valid JSON: %v", s, out, err)
	}
	ref, err := json.Marshal(string(s))
	if err != nil {
		t.Fatal(err)
	}
	var want string
	if err := json.Unmarshal(ref, &want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("AppendString(%q) decodes to %q, encoding/json gives %q", s, got, want)
	}
	if utf8.Valid(s) && got != string(s) {
		t.Fatalf("AppendString(%q) decodes to %q", s, got)
	}
	if !utf8.Valid(out) || strings.ContainsAny(string(out), "\u2028\u2029") {
		t.Fatalf("AppendString(%q) = %q: invalid UTF-8 or raw line separator", s, out)
	}
	for _, c := range out {
		if c < 0x20 {
			t.Fatalf("AppendString(%q) = %q: raw control character", s, out)
		}
	}
}

func TestAppendStringRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{
		"a", "Z", " ", `"`, `\`, "/", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
		"é", "李", "🙂", "\u2028", "\u2029", "\uFFFD",
		"\xff", "\xc3", "\xe2\x80", "\xed\xa0\x80", "\xf0\x9f", "\x80",
	}
	var buf []byte
	for i := 0; i < 20000; i++ {
		var s []byte
		switch i % 3 {
		case 0: // random pieces, heavy on special cases
			for n := rng.IntN(12); n > 0; n-- {
				s = append(s, pieces[rng.IntN(len(pieces))]...)
			}
		case 1: // random bytes
			for n := rng.IntN(16); n > 0; n-- {
				s = append(s, byte(rng.UintN(256)))
			}
		default: // random valid runes
			for n := rng.IntN(8); n > 0; n-- {
				r := rune(rng.IntN(utf8.MaxRune + 1))
				if rng.IntN(2) == 0 {
					r = rune(rng.IntN(0x3000))
				}
				s = utf8.AppendRune(s, r)
			}
		}
		buf = AppendString(buf[:0], s)
		checkAppendString(t, s, buf)
		if got := appendString(nil, string(s)); !bytes.Equal(got, buf) {
			t.Fatalf("string variant differs for %q", s)
		}
	}
}

// TestDecodeRune checks the generic UTF-8 decoder against unicode/utf8.
func TestDecodeRune(t *testing.T) {
	check := func(b []byte) {
		r1, n1 := utf8.DecodeRune(b)
		r2, n2 := decodeRune(b, 0)
		r3, n3 := decodeRune(string(b), 0)
		if r1 != r2 || n1 != n2 || r1 != r3 || n1 != n3 {
			t.Fatalf("decodeRune(%x) = %U,%d / %U,%d, want %U,%d", b, r2, n2, r3, n3, r1, n1)
		}
	}
	for a := 0; a < 256; a++ {
		check([]byte{byte(a)})
		for b := 0; b < 256; b++ {
			check([]byte{byte(a), byte(b)})
			for _, c := range []byte{0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff} {
				check([]byte{byte(a), byte(b), c})
				check([]byte{byte(a), byte(b), c, 0x80})
				check([]byte{byte(a), byte(b), c, 0xc0})
			}
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		check([]byte{byte(0xc0 + rng.IntN(64)), byte(rng.UintN(256)), byte(rng.UintN(256)), byte(rng.UintN(256))})
	}
}

func TestFrameType(t *testing.T) {
	tests := []struct {
		in   string
		want Type
	}{
		{`{"type":"offer","offer":{},"name":"a"}`, TypeOffer},
		{`{"type":"answer","answer":{}}`, TypeAnswer},
		{`{"type":"candidate","candidate":null}`, TypeCandidate},
		{`{"type":"leave"}`, TypeLeave},
		{`{"type":"login","success":true}`, TypeLogin},
		{`{"type":"message","name":"a","data":1}`, TypeMessage},
		{`{"type":"messages"}`, TypeUnknown},
		{`{"type":"error","message":"x"}`, TypeUnknown},
		{``, TypeUnknown},
		{`{`, TypeUnknown},
		{`{"type":"`, TypeUnknown},
		{`{"type":"o`, TypeUnknown},
		{`{"type":"offer"`, TypeUnknown},
		{`{"type":"offerx","a":1}`, TypeUnknown},
		{`{"type":"leave",`, TypeUnknown},
		{`{"type":"leaves"}`, TypeUnknown},
		{`{"type":"loginx",`, TypeUnknown},
		{`{ "type":"offer",`, TypeUnknown},
		{`{"name":"x","type":"offer"}`, TypeUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := FrameType([]byte(tc.in)); got != tc.want {
				t.Errorf("FrameType(%s) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestAppendAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are only meaningful in full runs")
	}
	payload := []byte(`{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"}`)
	name := []byte("李雷 \"bob\"\n\xff\u2028")
	dst := make([]byte, 0, 4096)
	tests := []struct {
		name string
		fn   func()
	}{
		{"AppendString", func() { dst = AppendString(dst[:0], name) }},
		{"AppendOffer", func() { dst = AppendOffer(dst[:0], payload, name) }},
		{"AppendAnswer", func() { dst = AppendAnswer(dst[:0], payload) }},
		{"AppendCandidate", func() { dst = AppendCandidate(dst[:0], payload) }},
		{"AppendLeave", func() { dst = AppendLeave(dst[:0]) }},
		{"AppendLogin", func() { dst = AppendLogin(dst[:0], true) }},
		{"AppendLoginExtra", func() { dst = AppendLoginExtra(dst[:0], true, "token", []byte(`"abc"`)) }},
		{"AppendError", func() { dst = AppendError(dst[:0], "unknown user \"bob\"\n\u2028") }},
		{"AppendMessage", func() { dst = AppendMessage(dst[:0], name, payload) }},
		{"AppendRoomMessage", func() { dst = AppendRoomMessage(dst[:0], name, name, payload) }},
		{"AppendJoined", func() { dst = AppendJoined(dst[:0], name, name) }},
		{"AppendPresence", func() { dst = AppendPresence(dst[:0], name, true) }},
		{"FrameType", func() { _ = FrameType(payload) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(1000, tc.fn); allocs > 0 {
				t.Fatalf("%s allocates %v times per call", tc.name, allocs)
			}
		})
	}
}
