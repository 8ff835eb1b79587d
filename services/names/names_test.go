package names

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func b64(s string) string { return "=" + base64.RawURLEncoding.EncodeToString([]byte(s)) }

var tests = []struct {
	name  string // subtest name
	in    string
	err   error  // expected Check error
	token string // expected token if err == nil; "" means don't check the exact value
}{
	{"plain", "alice", nil, "alice"},
	{"plain underscore digit", "Bob_2", nil, "Bob_2"},
	{"plain dash", "a-b", nil, "a-b"},
	{"star", "*", nil, b64("*")},
	{"gt", ">", nil, b64(">")},
	{"dot", "a.b", nil, b64("a.b")},
	{"subject wildcard", "user.>", nil, b64("user.>")},
	{"space", "a b", nil, b64("a b")},
	{"slash", "a/b", nil, b64("a/b")},
	{"equals prefix", "=abc", nil, b64("=abc")},
	{"equals only", "===", nil, b64("===")},
	{"base64 lookalike", "=YWJj", nil, b64("=YWJj")},
	{"chinese", "李雷", nil, b64("李雷")},
	{"emoji", "🙂", nil, b64("🙂")},
	{"nbsp allowed", "a\u00a0b", nil, b64("a\u00a0b")},
	{"just below C1", "\u00a0", nil, ""},
	{"near line separator", "\u2027\u202a", nil, ""},
	{"max length plain", strings.Repeat("a", MaxLen), nil, strings.Repeat("a", MaxLen)},
	{"max length unicode", strings.Repeat("é", MaxLen/2), nil, ""},
	{"empty", "", ErrEmpty, ""},
	{"too long by one", strings.Repeat("a", MaxLen+1), ErrTooLong, ""},
	{"too long unicode", strings.Repeat("é", MaxLen/2) + "a", ErrTooLong, ""},
	{"10KB", strings.Repeat("x.", 5*1024), ErrTooLong, ""},
	{"invalid utf8", "\xff\xfe", ErrInvalidUTF8, ""},
	{"truncated rune", "李"[:2], ErrInvalidUTF8, ""},
	{"surrogate", "\xed\xa0\x80", ErrInvalidUTF8, ""},
	{"NUL", "\x00", ErrControl, ""},
	{"tab", "tab\there", ErrControl, ""},
	{"newline", "line\nbreak", ErrControl, ""},
	{"CR", "a\rb", ErrControl, ""},
	{"DEL", "a\x7f", ErrControl, ""},
	{"C1 first", "a\u0080", ErrControl, ""},
	{"C1 NEL", "a\u0085b", ErrControl, ""},
	{"C1 last", "\u009f", ErrControl, ""},
	{"line separator", "a\u2028b", ErrControl, ""},
	{"paragraph separator", "a\u2029", ErrControl, ""},
}

func TestNames(t *testing.T) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.in)
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("Check(%q) = %v, want %v", tt.in, err, tt.err)
			}
			if err2 := CheckBytes([]byte(tt.in)); err2 != err {
				t.Fatalf("CheckBytes(%q) = %v, Check = %v", tt.in, err2, err)
			}
			tok := Token(tt.in) // must not panic, even for invalid names
			if got := string(AppendToken([]byte("prefix"), []byte(tt.in))); got != "prefix"+tok {
				t.Fatalf("AppendToken(%q) = %q, want %q", tt.in, got, "prefix"+tok)
			}
			if err != nil {
				if ValidToken(tok) {
					t.Fatalf("token %q of invalid name %q is valid", tok, tt.in)
				}
				return
			}
			if tt.token != "" && tok != tt.token {
				t.Fatalf("Token(%q) = %q, want %q", tt.in, tok, tt.token)
			}
			checkToken(t, tt.in, tok)
		})
	}
}

// checkToken asserts the properties of the token tok of the valid name n.
func checkToken(t *testing.T, n, tok string) {
	t.Helper()
	if tok == "" {
		t.Fatalf("Token(%q) is empty", n)
	}
	if strings.ContainsAny(tok, ".*> \t\r\n") {
		t.Fatalf("Token(%q) = %q is not a valid NATS subject token", n, tok)
	}
	for i := 0; i < len(tok); i++ {
		// JetStream KV key charset: [-/_=.a-zA-Z0-9].
		if c := tok[i]; !(isPlainByte(c) || c == '=' || c == '.' || c == '/') {
			t.Fatalf("Token(%q) = %q is not a valid KV key (byte %q)", n, tok, c)
		}
	}
	if len(tok) > maxTokenLen {
		t.Fatalf("Token(%q) has length %d > %d", n, len(tok), maxTokenLen)
	}
	got, err := Decode(tok)
	if err != nil || got != n {
		t.Fatalf("Decode(Token(%q)) = %q, %v", n, got, err)
	}
	if !ValidToken(tok) {
		t.Fatalf("ValidToken(Token(%q)) = false", n)
	}
}

func TestTokensDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, tt := range tests {
		if tt.err != nil {
			continue
		}
		tok := Token(tt.in)
		if prev, ok := seen[tok]; ok && prev != tt.in {
			t.Errorf("Token(%q) == Token(%q) == %q", tt.in, prev, tok)
		}
		seen[tok] = tt.in
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tok := range []string{
		"",
		"=",
		"=YWJj",        // "abc" is plain, so its token is "abc"
		"=YQ==",        // padding
		"=YR",          // non-zero trailing bits (canonical is "=YQ" for "a", itself plain)
		"=Ki",          // "*" with non-zero trailing bits; canonical is "=Kg"
		"=Kg=",         // padding
		"=K\ng",        // newline is skipped by encoding/base64
		"=K\rg",        // so is CR
		"=Kg+",         // standard alphabet
		"=K",           // impossible length
		"=AA",          // decodes to NUL
		"=_w",          // decodes to invalid UTF-8
		"a.b",          // plain token with '.'
		"a b",          // plain token with space
		"ab=",          // '=' inside a plain token
		"李雷",           // non-ASCII
		"==Kg",         // '=' in body
		b64("a\u2028"), // line separator
		b64(strings.Repeat("a.", MaxLen/2) + "a"), // too long name
		strings.Repeat("a", MaxLen+1),             // too long plain
		strings.Repeat("A", 10*1024),
	} {
		if got, err := Decode(tok); err != ErrBadToken {
			t.Errorf("Decode(%q) = %q, %v; want ErrBadToken", tok, got, err)
		}
		if ValidToken(tok) {
			t.Errorf("ValidToken(%q) = true", tok)
		}
	}
}

func TestLongestToken(t *testing.T) {
	n := strings.Repeat("🙂", MaxLen/4)
	if len(n) != MaxLen {
		t.Fatalf("len = %d", len(n))
	}
	tok := Token(n)
	if len(tok) != maxTokenLen {
		t.Fatalf("len(Token) = %d, want %d", len(tok), maxTokenLen)
	}
	checkToken(t, n, tok)
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []string{"alice", "a.b", "李雷🙂", strings.Repeat("🙂", MaxLen/4), "a\u2028b", "\xff"} {
		b := []byte(n)
		dst := make([]byte, 0, maxTokenLen)
		if a := testing.AllocsPerRun(100, func() { _ = CheckBytes(b) }); a > 0 {
			t.Errorf("CheckBytes(%q): %v allocs, want 0", n, a)
		}
		if a := testing.AllocsPerRun(100, func() { dst = AppendToken(dst[:0], b) }); a > 0 {
			t.Errorf("AppendToken(%q): %v allocs, want 0", n, a)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, tt := range tests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, n string) {
		err := Check(n)
		if err2 := CheckBytes([]byte(n)); err2 != err {
			t.Fatalf("CheckBytes(%q) = %v, Check = %v", n, err2, err)
		}
		// Cross-check Check against a rune-by-rune reference.
		if want := refCheck(n); err != want {
			t.Fatalf("Check(%q) = %v, want %v", n, err, want)
		}
		tok := Token(n)
		if got := string(AppendToken(nil, []byte(n))); got != tok {
			t.Fatalf("AppendToken(%q) = %q, Token = %q", n, got, tok)
		}
		if err != nil {
			if ValidToken(tok) {
				t.Fatalf("token %q of invalid name %q is valid", tok, n)
			}
			return
		}
		// Round trip implies Token is injective on valid names.
		checkToken(t, n, tok)
	})
}

func FuzzDecode(f *testing.F) {
	for _, tt := range tests {
		f.Add(Token(tt.in))
	}
	f.Add("=YWJj")
	f.Add("=YQ==")
	f.Add("=K\ng")
	f.Fuzz(func(t *testing.T, tok string) {
		n, err := Decode(tok)
		if ValidToken(tok) != (err == nil) {
			t.Fatalf("ValidToken(%q) = %v, Decode err = %v", tok, !(err == nil), err)
		}
		if err != nil {
			if err != ErrBadToken || n != "" {
				t.Fatalf("Decode(%q) = %q, %v", tok, n, err)
			}
			return
		}
		if Check(n) != nil {
			t.Fatalf("Decode(%q) = %q, which fails Check: %v", tok, n, Check(n))
		}
		if got := Token(n); got != tok {
			t.Fatalf("Token(Decode(%q)) = %q", tok, got)
		}
	})
}

// refCheck is a straightforward reference implementation of Check.
func refCheck(n string) error {
	switch {
	case n == "":
		return ErrEmpty
	case len(n) > MaxLen:
		return ErrTooLong
	case !utf8.ValidString(n):
		return ErrInvalidUTF8
	}
	for _, r := range n {
		if r < 0x20 || 0x7f <= r && r <= 0x9f || r == 0x2028 || r == 0x2029 {
			return ErrControl
		}
	}
	return nil
}

func BenchmarkAppendToken(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"plain", "alice_2"},
		{"unicode", "李雷 🙂 user.>"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := []byte(bc.in)
			dst := make([]byte, 0, maxTokenLen)
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				dst = AppendToken(dst[:0], in)
			}
		})
	}
}
