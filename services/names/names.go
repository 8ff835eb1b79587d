// Package names is the single place where signaling usernames are validated
// and mapped to NATS-safe name tokens.
//
// A name token is used as one token of a NATS subject ("user.<token>") and as
// a JetStream KV key. Tokens only ever contain the bytes [A-Za-z0-9_=-]: they
// are non-empty, never contain '.', '*', '>', '/' or whitespace, and are
// therefore valid both as a subject token and as a KV key.
//
// The mapping is bijective between names that pass [Check] and tokens that
// pass [ValidToken]: [Decode] inverts [Token] and accepts only canonical
// tokens, so every name has exactly one token and vice versa.
package names

import (
	"encoding/base64"
	"errors"
	"unicode/utf8"
)

// MaxLen is the longest accepted name in bytes (UTF-8).
const MaxLen = 256

// Errors returned by [Check], [CheckBytes] and [Decode]. Compare with
// errors.Is.
var (
	ErrEmpty       = errors.New("name is empty")
	ErrTooLong     = errors.New("name is longer than 256 bytes")
	ErrInvalidUTF8 = errors.New("name is not valid UTF-8")
	ErrControl     = errors.New("name contains a control character")
	ErrBadToken    = errors.New("not a valid name token")
)

// encPrefix starts every encoded token. It never occurs in a plain name, so
// plain and encoded tokens cannot collide.
const encPrefix = '='

// enc encodes non-plain names. Strict decoding rejects non-zero trailing
// bits, which together with the alphabet check in [Decode] makes the
// encoding canonical.
var enc = base64.RawURLEncoding.Strict()

// maxTokenLen is the length of the longest token Token produces for a name
// that passes Check.
var maxTokenLen = 1 + enc.EncodedLen(MaxLen)

// Check reports whether name may be used as a username. A valid name is
// non-empty, at most MaxLen bytes long, valid UTF-8, and contains no control
// characters: C0 (U+0000–U+001F), DEL (U+007F), C1 (U+0080–U+009F), and the
// line/paragraph separators U+2028 and U+2029. Everything else is allowed,
// including spaces, '.', '*', '>', emoji and any script.
//
// Check returns nil or one of ErrEmpty, ErrTooLong, ErrInvalidUTF8 and
// ErrControl, tested in that order.
func Check(name string) error {
	if err := checkLen(name); err != nil {
		return err
	}
	if !utf8.ValidString(name) {
		return ErrInvalidUTF8
	}
	return checkControl(name)
}

// CheckBytes is like [Check] for a byte slice. It does not allocate.
func CheckBytes(name []byte) error {
	if err := checkLen(name); err != nil {
		return err
	}
	if !utf8.Valid(name) {
		return ErrInvalidUTF8
	}
	return checkControl(name)
}

func checkLen[T string | []byte](name T) error {
	switch {
	case len(name) == 0:
		return ErrEmpty
	case len(name) > MaxLen:
		return ErrTooLong
	}
	return nil
}

// checkControl reports ErrControl if the valid UTF-8 text s contains a
// forbidden control character. It works on the encoded bytes: C0 and DEL are
// single bytes, C1 is 0xC2 0x80–0x9F, and U+2028/U+2029 are 0xE2 0x80
// 0xA8/0xA9. In valid UTF-8 these byte patterns only occur as those runes.
func checkControl[T string | []byte](s T) error {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			return ErrControl
		case c == 0xc2 && i+1 < len(s) && s[i+1] <= 0x9f:
			// s[i+1] >= 0x80 because it is a continuation byte.
			return ErrControl
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			return ErrControl
		}
	}
	return nil
}

// isPlain reports whether name consists only of [A-Za-z0-9_-]. The empty
// name is plain.
func isPlain[T string | []byte](name T) bool {
	for i := 0; i < len(name); i++ {
		if !isPlainByte(name[i]) {
			return false
		}
	}
	return true
}

func isPlainByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// isBase64URL reports whether c is in the base64url alphabet.
// It is [A-Za-z0-9_-], the same set as plain names.
func isBase64URL(c byte) bool { return isPlainByte(c) }

// Token returns the name token of name, which must have passed [Check].
// Names consisting only of [A-Za-z0-9_-] are returned unchanged, so they stay
// readable in the nats CLI. Any other name becomes "=" followed by
// base64.RawURLEncoding of its bytes. Tokens are collision-free because '='
// never occurs in a plain name.
//
// For a name that fails Check the result is unspecified (and [Decode]
// rejects it), but Token does not panic.
func Token(name string) string {
	if isPlain(name) {
		return name
	}
	var buf [64]byte
	return string(AppendToken(buf[:0], []byte(name)))
}

// AppendToken appends the token of name to dst and returns the extended
// slice, as [Token] would compute it. It does not allocate when dst has
// enough spare capacity (1 + base64.RawURLEncoding.EncodedLen(len(name))
// bytes suffice).
func AppendToken(dst []byte, name []byte) []byte {
	if isPlain(name) {
		return append(dst, name...)
	}
	dst = append(dst, encPrefix)
	return enc.AppendEncode(dst, name)
}

// Decode returns the name whose token is tok. It fails with ErrBadToken
// unless tok is canonical, that is exactly what [Token] returns for some name
// that passes [Check]. In particular it rejects the empty token, bytes outside
// the token alphabet, base64 padding, non-zero trailing bits, encoded tokens
// whose name is plain (e.g. "=YWJj", since Token("abc") is "abc"), and
// encoded tokens whose name fails Check.
func Decode(tok string) (string, error) {
	var buf [MaxLen]byte
	name, plain, err := decode(tok, &buf)
	if err != nil {
		return "", err
	}
	if plain {
		return tok, nil
	}
	return string(name), nil
}

// ValidToken reports whether [Decode](tok) would succeed.
func ValidToken(tok string) bool {
	var buf [MaxLen]byte
	_, _, err := decode(tok, &buf)
	return err == nil
}

// decode validates tok. For a plain token it returns plain == true and no
// name (the name is tok itself); otherwise it decodes the name into buf.
func decode(tok string, buf *[MaxLen]byte) (name []byte, plain bool, err error) {
	if tok == "" || len(tok) > maxTokenLen {
		return nil, false, ErrBadToken
	}
	if tok[0] != encPrefix {
		if len(tok) > MaxLen || !isPlain(tok) {
			return nil, false, ErrBadToken
		}
		return nil, true, nil
	}
	body := tok[1:]
	// The base64 decoder skips '\r' and '\n'; insist on the bare alphabet so
	// that only the canonical spelling is accepted.
	for i := 0; i < len(body); i++ {
		if !isBase64URL(body[i]) {
			return nil, false, ErrBadToken
		}
	}
	// len(body) <= EncodedLen(MaxLen), so the name fits in buf.
	n, err := enc.Decode(buf[:], []byte(body))
	if err != nil {
		return nil, false, ErrBadToken
	}
	name = buf[:n]
	if CheckBytes(name) != nil || isPlain(name) {
		return nil, false, ErrBadToken
	}
	return name, false, nil
}
