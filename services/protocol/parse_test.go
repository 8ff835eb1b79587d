package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func str(s string) *string { return &s }

type parseCase struct {
	name string
	in   string
	err  error
	typ  Type
	// Expected slices; nil pointer means the field must be nil.
	rawType *string
	nameVal *string
	payload *string
	// Expected name flags.
	hasName, nameIsString bool
}

// deep returns depth nested arrays, terminated if closed is set.
func deep(depth int, closed bool) string {
	s := strings.Repeat("[", depth)
	if closed {
		s += strings.Repeat("]", depth)
	}
	return s
}

var (
	largeSDP     = `"` + strings.Repeat(`a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\r\n`, 64*1024/56+1) + `"`
	largeArray   = "[" + strings.Repeat("1234567, ", 64*1024/9) + "0]"
	deepValid    = deep(maxDepth-1, true) // with the top-level object: exactly the limit
	deepTooDeep  = deep(maxDepth, true)   // one level over the limit
	deepObjects  = strings.Repeat(`{"a":`, maxDepth-1) + "1" + strings.Repeat("}", maxDepth-1)
	deepObjects2 = strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth)
	longKey      = strings.Repeat(`\u0074`, 20)
)

var parseCases = []parseCase{
	// Every message type.
	{name: "login", in: `{"type":"login","name":"alice"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("alice"), hasName: true, nameIsString: true},
	{name: "offer", in: `{"type":"offer","name":"b","offer": { "sdp" : "v=0\r\n" , "x":[1, 2] } }`, typ: TypeOffer, rawType: str("offer"), nameVal: str("b"), hasName: true, nameIsString: true, payload: str(`{ "sdp" : "v=0\r\n" , "x":[1, 2] }`)},
	{name: "answer", in: `{"type":"answer","name":"a","answer":{"type":"answer","sdp":"v=0\r\n"}}`, typ: TypeAnswer, rawType: str("answer"), nameVal: str("a"), hasName: true, nameIsString: true, payload: str(`{"type":"answer","sdp":"v=0\r\n"}`)},
	{name: "candidate", in: `{"type":"candidate","name":"a","candidate":{"candidate":"candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}`, typ: TypeCandidate, rawType: str("candidate"), nameVal: str("a"), hasName: true, nameIsString: true, payload: str(`{"candidate":"candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}`)},
	{name: "leave", in: `{"type":"leave","name":"bob"}`, typ: TypeLeave, rawType: str("leave"), nameVal: str("bob"), hasName: true, nameIsString: true},
	{name: "message to a user", in: `{"type":"message","name":"b","data":{"text":"hi"}}`, typ: TypeMessage, rawType: str("message"), nameVal: str("b"), hasName: true, nameIsString: true, payload: str(`{"text":"hi"}`)},
	{name: "message to a room", in: `{"type":"message","room":"r","data":[1]}`, typ: TypeMessage, rawType: str("message"), payload: str(`[1]`)},
	{name: "join", in: `{"type":"join","room":"lobby"}`, typ: TypeJoin, rawType: str("join")},
	{name: "part", in: `{"type":"part","room":"lobby","data":1}`, typ: TypePart, rawType: str("part")},
	{name: "watch", in: `{"type":"watch","names":["a","b"]}`, typ: TypeWatch, rawType: str("watch"), payload: str(`["a","b"]`)},
	{name: "unwatch", in: `{"type":"unwatch","names":[]}`, typ: TypeUnwatch, rawType: str("unwatch"), payload: str(`[]`)},
	{name: "unknown type", in: `{"type":"chat","name":"x","chat":1}`, typ: TypeUnknown, rawType: str("chat"), nameVal: str("x"), hasName: true, nameIsString: true},
	{name: "type is case sensitive", in: `{"type":"Offer","offer":1}`, typ: TypeUnknown, rawType: str("Offer")},
	{name: "empty type", in: `{"type":""}`, typ: TypeUnknown, rawType: str("")},
	{name: "keys in any order", in: `{"offer":1,"name":"n","type":"offer"}`, typ: TypeOffer, rawType: str("offer"), nameVal: str("n"), hasName: true, nameIsString: true, payload: str("1")},
	{name: "whitespace everywhere", in: " \t\r\n{ \"type\" \n:\t\"candidate\" , \"candidate\" :\r\n [ 1 ] \n, \"name\" : \"x\" }\n ", typ: TypeCandidate, rawType: str("candidate"), nameVal: str("x"), hasName: true, nameIsString: true, payload: str("[ 1 ]")},
	{name: "unknown keys ignored", in: `{"x":{"type":"login"},"type":"leave","y":[{"name":"z"}]}`, typ: TypeLeave, rawType: str("leave")},
	{name: "login without name", in: `{"type":"login"}`, typ: TypeLogin, rawType: str("login")},
	{name: "login field is not a payload", in: `{"type":"login","login":{}}`, typ: TypeLogin, rawType: str("login")},
	{name: "leave field is not a payload", in: `{"type":"leave","leave":1}`, typ: TypeLeave, rawType: str("leave")},

	// Payloads of every JSON kind, byte for byte.
	{name: "payload string", in: `{"type":"offer","offer":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"}`, typ: TypeOffer, rawType: str("offer"), payload: str(`"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"`)},
	{name: "payload string escapes kept raw", in: `{"type":"offer","offer":"a\"b\\c\u00e9\/\ud83d\ude42"}`, typ: TypeOffer, rawType: str("offer"), payload: str(`"a\"b\\c\u00e9\/\ud83d\ude42"`)},
	{name: "payload null", in: `{"type":"offer","offer":null}`, typ: TypeOffer, rawType: str("offer"), payload: str("null")},
	{name: "payload true", in: `{"type":"answer","answer":true}`, typ: TypeAnswer, rawType: str("answer"), payload: str("true")},
	{name: "payload false", in: `{"type":"answer","answer":false}`, typ: TypeAnswer, rawType: str("answer"), payload: str("false")},
	{name: "payload integer", in: `{"type":"offer","offer":0}`, typ: TypeOffer, rawType: str("offer"), payload: str("0")},
	{name: "payload number", in: `{"type":"offer","offer":-12.5e+10}`, typ: TypeOffer, rawType: str("offer"), payload: str("-12.5e+10")},
	{name: "payload huge number", in: `{"type":"offer","offer":1e999}`, typ: TypeOffer, rawType: str("offer"), payload: str("1e999")},
	{name: "payload array", in: `{"type":"offer","offer":[1, "a" ,{"b":null}, [] ,{}]}`, typ: TypeOffer, rawType: str("offer"), payload: str(`[1, "a" ,{"b":null}, [] ,{}]`)},
	{name: "payload empty object", in: `{"type":"offer","offer":{}}`, typ: TypeOffer, rawType: str("offer"), payload: str("{}")},
	{name: "payload empty array", in: `{"type":"offer","offer":[ ]}`, typ: TypeOffer, rawType: str("offer"), payload: str("[ ]")},
	{name: "payload nested", in: `{"type":"answer","answer":{"a":{"b":[{"c":[[]]}]},"d":"}]"}}`, typ: TypeAnswer, rawType: str("answer"), payload: str(`{"a":{"b":[{"c":[[]]}]},"d":"}]"}`)},
	{name: "candidate null", in: `{"type":"candidate","name":"bob","candidate":null}`, typ: TypeCandidate, rawType: str("candidate"), nameVal: str("bob"), hasName: true, nameIsString: true, payload: str("null")},
	{name: "candidate missing", in: `{"type":"candidate","name":"bob"}`, typ: TypeCandidate, rawType: str("candidate"), nameVal: str("bob"), hasName: true, nameIsString: true},
	{name: "payload of other type ignored", in: `{"type":"offer","answer":1,"candidate":2}`, typ: TypeOffer, rawType: str("offer")},
	{name: "payload invalid utf8 kept raw", in: "{\"type\":\"offer\",\"offer\":\"a\xffb\"}", typ: TypeOffer, rawType: str("offer"), payload: str("\"a\xffb\"")},
	{name: "large string payload", in: `{"type":"offer","name":"x","offer":` + largeSDP + `}`, typ: TypeOffer, rawType: str("offer"), nameVal: str("x"), hasName: true, nameIsString: true, payload: str(largeSDP)},
	{name: "large array payload", in: `{"type":"candidate","candidate":` + largeArray + `}`, typ: TypeCandidate, rawType: str("candidate"), payload: str(largeArray)},

	// Names.
	{name: "name escaped CJK", in: `{"type":"login","name":"\u674e\u96f7"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("李雷"), hasName: true, nameIsString: true},
	{name: "name surrogate pair", in: `{"type":"login","name":"\ud83d\ude42"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("🙂"), hasName: true, nameIsString: true},
	{name: "name uppercase hex", in: `{"type":"login","name":"caf\u00E9 \uD83D\uDE42"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("café 🙂"), hasName: true, nameIsString: true},
	{name: "name raw UTF-8", in: `{"type":"login","name":"李雷🙂"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("李雷🙂"), hasName: true, nameIsString: true},
	{name: "name simple escapes", in: `{"type":"login","name":"a\"b\\c\/d\b\f\n\r\t"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("a\"b\\c/d\b\f\n\r\t"), hasName: true, nameIsString: true},
	{name: "name escaped NUL", in: `{"type":"login","name":"a\u0000b"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("a\x00b"), hasName: true, nameIsString: true},
	{name: "name lone high surrogate", in: `{"type":"login","name":"x\ud83dy"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("x\uFFFDy"), hasName: true, nameIsString: true},
	{name: "name lone low surrogate", in: `{"type":"login","name":"\ude42"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFD"), hasName: true, nameIsString: true},
	{name: "name high surrogate then BMP", in: `{"type":"login","name":"\ud83d\u0041"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFDA"), hasName: true, nameIsString: true},
	{name: "name high high low", in: `{"type":"login","name":"\ud83d\ud83d\ude42"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFD🙂"), hasName: true, nameIsString: true},
	{name: "name high surrogate then simple escape", in: `{"type":"login","name":"\ud83d\n"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFD\n"), hasName: true, nameIsString: true},
	{name: "name invalid UTF-8", in: "{\"type\":\"login\",\"name\":\"a\xffb\xc3\"}", typ: TypeLogin, rawType: str("login"), nameVal: str("a\uFFFDb\uFFFD"), hasName: true, nameIsString: true},
	{name: "name encoded surrogate", in: "{\"type\":\"login\",\"name\":\"\xed\xa0\x80\"}", typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFD\uFFFD\uFFFD"), hasName: true, nameIsString: true},
	{name: "name invalid UTF-8 and escape", in: "{\"type\":\"login\",\"name\":\"\xff\\u00e9\"}", typ: TypeLogin, rawType: str("login"), nameVal: str("\uFFFDé"), hasName: true, nameIsString: true},
	{name: "name empty", in: `{"type":"login","name":""}`, typ: TypeLogin, rawType: str("login"), nameVal: str(""), hasName: true, nameIsString: true},
	{name: "name number", in: `{"type":"offer","name":42,"offer":{}}`, typ: TypeOffer, rawType: str("offer"), hasName: true, payload: str("{}")},
	{name: "name null", in: `{"type":"login","name":null}`, typ: TypeLogin, rawType: str("login"), hasName: true},
	{name: "name object", in: `{"type":"login","name":{"name":"x"}}`, typ: TypeLogin, rawType: str("login"), hasName: true},

	// Duplicate keys: the last one wins.
	{name: "duplicate type", in: `{"type":"login","type":"offer","offer":1}`, typ: TypeOffer, rawType: str("offer"), payload: str("1")},
	{name: "duplicate payload", in: `{"type":"offer","offer":{"a":1},"offer":[2]}`, typ: TypeOffer, rawType: str("offer"), payload: str("[2]")},
	{name: "duplicate name", in: `{"name":"a","type":"login","name":"b"}`, typ: TypeLogin, rawType: str("login"), nameVal: str("b"), hasName: true, nameIsString: true},
	{name: "duplicate name last not string", in: `{"name":"a","name":5,"type":"login"}`, typ: TypeLogin, rawType: str("login"), hasName: true},
	{name: "duplicate type last null", in: `{"type":"offer","type":null}`, err: ErrMissingType},
	{name: "duplicate type first number", in: `{"type":1,"type":"leave"}`, typ: TypeLeave, rawType: str("leave")},
	{name: "duplicate escaped key", in: `{"type":"offer","\u0074ype":"answer","answer":3}`, typ: TypeAnswer, rawType: str("answer"), payload: str("3")},

	// Keys with escapes.
	{name: "escaped key type", in: `{"\u0074ype":"login"}`, typ: TypeLogin, rawType: str("login")},
	{name: "escaped keys type and offer", in: `{"typ\u0065":"offer","\u006f\u0066\u0066\u0065\u0072":[1]}`, typ: TypeOffer, rawType: str("offer"), payload: str("[1]")},
	{name: "escaped key name", in: `{"n\u0061me":"x","type":"leave"}`, typ: TypeLeave, rawType: str("leave"), nameVal: str("x"), hasName: true, nameIsString: true},
	{name: "escaped key candidate", in: `{"type":"candidate","\u0063\u0061\u006e\u0064\u0069\u0064\u0061\u0074\u0065":{}}`, typ: TypeCandidate, rawType: str("candidate"), payload: str("{}")},
	{name: "escaped key other", in: `{"ty\/pe":"login","type\u0000":"x","type":"leave"}`, typ: TypeLeave, rawType: str("leave")},
	{name: "long escaped key", in: `{"` + longKey + `":"login","type":"leave"}`, typ: TypeLeave, rawType: str("leave")},
	{name: "escaped type value", in: `{"type":"\u006cogin"}`, typ: TypeLogin, rawType: str("login")},
	{name: "escaped type value unknown", in: `{"type":"x\ty"}`, typ: TypeUnknown, rawType: str("x\ty")},
	{name: "escaped type and name", in: `{"type":"\u006ceave","name":"\u674e"}`, typ: TypeLeave, rawType: str("leave"), nameVal: str("李"), hasName: true, nameIsString: true},
	{name: "invalid UTF-8 type value", in: "{\"type\":\"login\xff\"}", typ: TypeUnknown, rawType: str("login\uFFFD")},
	{name: "invalid UTF-8 key", in: "{\"type\xff\":\"login\",\"type\":\"leave\"}", typ: TypeLeave, rawType: str("leave")},

	// Missing type or not a string.
	{name: "empty object", in: `{}`, err: ErrMissingType},
	{name: "empty object with spaces", in: ` { } `, err: ErrMissingType},
	{name: "no type key", in: `{"name":"a","offer":1}`, err: ErrMissingType, nameVal: str("a"), hasName: true, nameIsString: true},
	{name: "nested type only", in: `{"x":{"type":"login"}}`, err: ErrMissingType},
	{name: "type null", in: `{"type":null}`, err: ErrMissingType},
	{name: "type number", in: `{"type":1}`, err: ErrTypeNotString},
	{name: "type object", in: `{"type":{"type":"login"}}`, err: ErrTypeNotString},
	{name: "type array", in: `{"type":["offer"]}`, err: ErrTypeNotString},
	{name: "type bool", in: `{"type":true,"name":"n"}`, err: ErrTypeNotString, nameVal: str("n"), hasName: true, nameIsString: true},

	// Valid JSON that is not an object.
	{name: "array", in: `[]`, err: ErrNotObject},
	{name: "string", in: `"x"`, err: ErrNotObject},
	{name: "number", in: `1`, err: ErrNotObject},
	{name: "null", in: `null`, err: ErrNotObject},
	{name: "true", in: ` true `, err: ErrNotObject},
	{name: "array of object", in: ` [ {"type":"login"} ] `, err: ErrNotObject},
	{name: "deep array at limit", in: deep(maxDepth, true), err: ErrNotObject},

	// Invalid JSON.
	{name: "empty input", in: ``, err: ErrInvalidJSON},
	{name: "only whitespace", in: " \t\r\n ", err: ErrInvalidJSON},
	{name: "open brace", in: `{`, err: ErrInvalidJSON},
	{name: "unterminated object", in: `{"type":"login"`, err: ErrInvalidJSON},
	{name: "unterminated after comma", in: `{"type":"login",`, err: ErrInvalidJSON},
	{name: "unterminated string", in: `{"type":"login`, err: ErrInvalidJSON},
	{name: "unterminated key", in: `{"type`, err: ErrInvalidJSON},
	{name: "missing value", in: `{"type":}`, err: ErrInvalidJSON},
	{name: "missing colon", in: `{"type" "login"}`, err: ErrInvalidJSON},
	{name: "key after colon missing", in: `{"type":`, err: ErrInvalidJSON},
	{name: "trailing x", in: `{"type":"login"}x`, err: ErrInvalidJSON},
	{name: "trailing comma", in: `{"a":1,}`, err: ErrInvalidJSON},
	{name: "trailing comma after type", in: `{"type":"login",}`, err: ErrInvalidJSON},
	{name: "leading comma", in: `{,"type":"login"}`, err: ErrInvalidJSON},
	{name: "second object", in: `{"type":"login"} {}`, err: ErrInvalidJSON},
	{name: "extra brace", in: `{"type":"login"}}`, err: ErrInvalidJSON},
	{name: "trailing NUL", in: "{\"type\":\"login\"}\x00", err: ErrInvalidJSON},
	{name: "unquoted key", in: `{type:"login"}`, err: ErrInvalidJSON},
	{name: "single quotes", in: `{'type':'login'}`, err: ErrInvalidJSON},
	{name: "BOM", in: "\ufeff{\"type\":\"login\"}", err: ErrInvalidJSON},
	{name: "vertical tab", in: "\v{\"type\":\"login\"}", err: ErrInvalidJSON},
	{name: "not object invalid", in: `[1,]`, err: ErrInvalidJSON},
	{name: "open bracket", in: `[`, err: ErrInvalidJSON},
	{name: "bad literal top", in: `nul`, err: ErrInvalidJSON},
	{name: "two scalars", in: `1 2`, err: ErrInvalidJSON},
	{name: "leading zero", in: `{"type":"offer","offer":01}`, err: ErrInvalidJSON},
	{name: "bare dot", in: `{"type":"offer","offer":1.}`, err: ErrInvalidJSON},
	{name: "leading dot", in: `{"type":"offer","offer":.5}`, err: ErrInvalidJSON},
	{name: "lone minus", in: `{"type":"offer","offer":-}`, err: ErrInvalidJSON},
	{name: "plus sign", in: `{"type":"offer","offer":+1}`, err: ErrInvalidJSON},
	{name: "empty exponent", in: `{"type":"offer","offer":1e}`, err: ErrInvalidJSON},
	{name: "exponent sign only", in: `{"type":"offer","offer":1e+}`, err: ErrInvalidJSON},
	{name: "hex number", in: `{"type":"offer","offer":0x1}`, err: ErrInvalidJSON},
	{name: "NaN", in: `{"type":"offer","offer":NaN}`, err: ErrInvalidJSON},
	{name: "short true", in: `{"type":"offer","offer":tru}`, err: ErrInvalidJSON},
	{name: "long true", in: `{"type":"offer","offer":truex}`, err: ErrInvalidJSON},
	{name: "short null", in: `{"type":"offer","offer":nul}`, err: ErrInvalidJSON},
	{name: "bad escape", in: `{"type":"offer","offer":"\x"}`, err: ErrInvalidJSON},
	{name: "short unicode escape", in: `{"type":"offer","offer":"\u12"}`, err: ErrInvalidJSON},
	{name: "bad hex escape", in: `{"type":"offer","offer":"\u12g4"}`, err: ErrInvalidJSON},
	{name: "escape at end", in: `{"type":"offer","offer":"\`, err: ErrInvalidJSON},
	{name: "raw control char", in: "{\"type\":\"offer\",\"offer\":\"a\x01b\"}", err: ErrInvalidJSON},
	{name: "raw newline in string", in: "{\"type\":\"offer\",\"offer\":\"a\nb\"}", err: ErrInvalidJSON},
	{name: "raw control char in key", in: "{\"ty\x1fpe\":\"login\"}", err: ErrInvalidJSON},
	{name: "array missing comma", in: `{"type":"offer","offer":[1 2]}`, err: ErrInvalidJSON},
	{name: "array trailing comma", in: `{"type":"offer","offer":[1,]}`, err: ErrInvalidJSON},
	{name: "object missing value", in: `{"type":"offer","offer":{"b"}}`, err: ErrInvalidJSON},
	{name: "object trailing comma", in: `{"type":"offer","offer":{"b":1,}}`, err: ErrInvalidJSON},
	{name: "object non-string key", in: `{"type":"offer","offer":{1:2}}`, err: ErrInvalidJSON},
	{name: "mismatched brackets", in: `{"type":"offer","offer":[}`, err: ErrInvalidJSON},
	{name: "mismatched braces", in: `{"type":"offer","offer":{]}`, err: ErrInvalidJSON},
	{name: "mismatched nested", in: `{"type":"offer","offer":[{"a":[1}]]}`, err: ErrInvalidJSON},
	{name: "invalid after valid type", in: `{"type":"login","x":[}`, err: ErrInvalidJSON},

	// Nesting: at most maxDepth containers, counting the top-level object,
	// as in encoding/json.
	{name: "deep nesting at limit", in: `{"type":"offer","offer":` + deepValid + `}`, typ: TypeOffer, rawType: str("offer"), payload: str(deepValid)},
	{name: "deep objects at limit", in: `{"type":"answer","answer":` + deepObjects + `}`, typ: TypeAnswer, rawType: str("answer"), payload: str(deepObjects)},
	{name: "deep nesting over limit", in: `{"type":"offer","offer":` + deepTooDeep + `}`, err: ErrInvalidJSON},
	{name: "deep objects over limit", in: `{"type":"answer","answer":` + deepObjects2 + `}`, err: ErrInvalidJSON},
	{name: "deep nesting 100000", in: `{"type":"offer","offer":` + deep(100000, true) + `}`, err: ErrInvalidJSON},
	{name: "deep nesting 100000 unterminated", in: `{"type":"offer","offer":` + deep(100000, false), err: ErrInvalidJSON},
	{name: "deep array 100000 top-level", in: deep(100000, true), err: ErrInvalidJSON},
	{name: "deep array over limit top-level", in: deep(maxDepth+1, true), err: ErrInvalidJSON},
}

func TestParse(t *testing.T) {
	var f Frame
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.in)
			err := Parse(data, &f)
			if err != tc.err {
				t.Fatalf("Parse error = %v, want %v", err, tc.err)
			}
			if f.Type != tc.typ {
				t.Errorf("Type = %v, want %v", f.Type, tc.typ)
			}
			checkBytes(t, "RawType", f.RawType, tc.rawType)
			checkBytes(t, "Name", f.Name, tc.nameVal)
			checkBytes(t, "Payload", f.Payload, tc.payload)
			if f.HasName != tc.hasName || f.NameIsString != tc.nameIsString {
				t.Errorf("HasName, NameIsString = %v, %v, want %v, %v", f.HasName, f.NameIsString, tc.hasName, tc.nameIsString)
			}
			checkOracle(t, data, &f, err)
		})
	}
}

func checkBytes(t *testing.T, field string, got []byte, want *string) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s = %q, want nil", field, got)
	case want != nil && got == nil:
		t.Errorf("%s = nil, want %q", field, *want)
	case want != nil && string(got) != *want:
		if len(got) > 200 || len(*want) > 200 {
			t.Errorf("%s differs: len %d, want len %d", field, len(got), len(*want))
		} else {
			t.Errorf("%s = %q, want %q", field, got, *want)
		}
	}
}

// TestParseNestingMatchesEncodingJSON pins the documented nesting rule: Parse
// and encoding/json.Valid agree around the limit.
func TestParseNestingMatchesEncodingJSON(t *testing.T) {
	var f Frame
	for _, depth := range []int{maxDepth - 2, maxDepth - 1, maxDepth, maxDepth + 1} {
		for _, open := range []string{"[", `{"k":`} {
			close := "]"
			if open != "[" {
				close = "}"
			}
			inner := strings.Repeat(open, depth) + "0" + strings.Repeat(close, depth)
			data := []byte(`{"type":"offer","offer":` + inner + `}`)
			err := Parse(data, &f)
			valid := json.Valid(data)
			wantValid := depth+1 <= maxDepth
			if valid != wantValid {
				t.Fatalf("depth %d %s: json.Valid = %v, expected %v", depth, open, valid, wantValid)
			}
			if (err == nil) != valid {
				t.Fatalf("depth %d %s: Parse error %v, json.Valid %v", depth, open, err, valid)
			}
			if err != nil && err != ErrInvalidJSON {
				t.Fatalf("depth %d: error %v", depth, err)
			}
		}
	}
}

// TestParseAliasing checks which results alias the input and that the slices
// cannot be used to overwrite data they do not own.
func TestParseAliasing(t *testing.T) {
	var f Frame
	data := []byte(`{"type":"offer","name":"bob","offer":{"a":1}}`)
	if err := Parse(data, &f); err != nil {
		t.Fatal(err)
	}
	for _, s := range [][]byte{f.RawType, f.Name, f.Payload} {
		if cap(s) != len(s) {
			t.Errorf("slice %q has spare capacity %d", s, cap(s)-len(s))
		}
		if !aliases(data, s) {
			t.Errorf("%q does not alias the input", s)
		}
	}

	data = []byte(`{"type":"\u006ceave","name":"\u674e\u96f7"}`)
	if err := Parse(data, &f); err != nil {
		t.Fatal(err)
	}
	if string(f.RawType) != "leave" || string(f.Name) != "李雷" {
		t.Fatalf("RawType %q Name %q", f.RawType, f.Name)
	}
	if aliases(data, f.Name) || aliases(data, f.RawType) {
		t.Error("decoded strings alias the input")
	}
	if cap(f.RawType) != len(f.RawType) {
		t.Error("RawType has spare capacity")
	}
	_ = append(f.RawType, "XXXXXXXX"...)
	if string(f.Name) != "李雷" {
		t.Errorf("append to RawType clobbered Name: %q", f.Name)
	}
}

func aliases(data, s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for i := range data {
		if &data[i] == &s[0] {
			return true
		}
	}
	return false
}

// TestParseReuse parses different frames into one Frame and checks that no
// state leaks from one call to the next.
func TestParseReuse(t *testing.T) {
	var f Frame
	seq := []parseCase{}
	for _, tc := range parseCases {
		if len(tc.in) < 1000 {
			seq = append(seq, tc)
		}
	}
	// Forwards and backwards, so every case follows several others.
	for pass := 0; pass < 2; pass++ {
		for k := range seq {
			tc := seq[k]
			if pass == 1 {
				tc = seq[len(seq)-1-k]
			}
			err := Parse([]byte(tc.in), &f)
			if err != tc.err || f.Type != tc.typ || f.HasName != tc.hasName || f.NameIsString != tc.nameIsString {
				t.Fatalf("%s: err %v type %v", tc.name, err, f.Type)
			}
			checkBytes(t, tc.name+": RawType", f.RawType, tc.rawType)
			checkBytes(t, tc.name+": Name", f.Name, tc.nameVal)
			checkBytes(t, tc.name+": Payload", f.Payload, tc.payload)
		}
	}
}

func TestParseDoesNotModifyInput(t *testing.T) {
	var f Frame
	for _, tc := range parseCases {
		data := []byte(tc.in)
		orig := bytes.Clone(data)
		_ = Parse(data, &f)
		if !bytes.Equal(data, orig) {
			t.Fatalf("%s: input modified", tc.name)
		}
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{
		TypeUnknown: "unknown", TypeLogin: "login", TypeOffer: "offer", TypeAnswer: "answer",
		TypeCandidate: "candidate", TypeLeave: "leave", TypeJoin: "join", TypePart: "part",
		TypeMessage: "message", TypeWatch: "watch", TypeUnwatch: "unwatch", Type(200): "unknown",
	} {
		t.Run(want, func(t *testing.T) {
			if got := typ.String(); got != want {
				t.Errorf("Type(%d).String() = %q, want %q", typ, got, want)
			}
		})
	}
}

func TestParseAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are only meaningful in full runs")
	}
	tests := []struct{ name, in string }{
		{"offer object payload", `{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"}}`},
		{"escaped name", `{"type":"offer","name":"\u674e\u96f7 \ud83d\ude42","offer":{"sdp":"v=0"}}`},
		{"escaped keys and type", `{"\u0074ype":"\u006fffer","n\u0061me":"x\ty","offer":[1,{"a":null}]}`},
		{"invalid UTF-8 name", "{\"type\":\"login\",\"name\":\"a\xffb\"}"},
		{"candidate", `{"type":"candidate","name":"bob","candidate":{"candidate":"candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}`},
		{"large payload", `{"type":"offer","name":"x","offer":` + largeSDP + `}`},
		{"deep payload", `{"type":"offer","offer":` + deepValid + `}`},
		{"error", `{"type":1}`},
		{"invalid", `{"type":"offer","offer":[}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.in)
			var f Frame
			_ = Parse(data, &f) // warm up the scratch buffer
			allocs := testing.AllocsPerRun(1000, func() {
				_ = Parse(data, &f)
			})
			if allocs > 0 {
				t.Fatalf("Parse allocates %v times per call", allocs)
			}
		})
	}
}
