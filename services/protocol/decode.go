package protocol

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// needsUnescape reports whether the contents s of a valid JSON string literal
// (without quotes) differ from their decoded value, i.e. whether s contains
// an escape or invalid UTF-8.
func needsUnescape(s []byte) bool {
	return bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s)
}

// getu4 decodes the \uXXXX escape at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnescaped appends the decoded value of s, the contents of a JSON
// string literal already validated by skipString, to dst. Decoding matches
// encoding/json: surrogate pairs are combined, lone surrogates and invalid
// UTF-8 bytes become U+FFFD.
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			switch e := s[i+1]; e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := getu4(s[i:])
				i += 6
				if utf16.IsSurrogate(r) {
					if d := utf16.DecodeRune(r, getu4(s[i:])); d != utf8.RuneError {
						i += 6
						dst = utf8.AppendRune(dst, d)
						continue
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
			i += 2
		case c < utf8.RuneSelf:
			j := i + 1
			for j < len(s) && s[j] != '\\' && s[j] < utf8.RuneSelf {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return dst
}

// decodeRune is utf8.DecodeRune for both strings and byte slices: it returns
// the rune starting at s[i] and its width, or (utf8.RuneError, 1) if the bytes
// there are not valid UTF-8.
func decodeRune[T ~string | ~[]byte](s T, i int) (rune, int) {
	const (
		cont    = 0x80
		contMax = 0xBF
	)
	c0 := s[i]
	n := len(s) - i
	switch {
	case c0 < utf8.RuneSelf:
		return rune(c0), 1
	case c0 < 0xC2: // continuation byte or overlong 2-byte lead
		return utf8.RuneError, 1
	case c0 < 0xE0:
		if n < 2 || s[i+1] < cont || s[i+1] > contMax {
			return utf8.RuneError, 1
		}
		return rune(c0&0x1F)<<6 | rune(s[i+1]&0x3F), 2
	case c0 < 0xF0:
		lo, hi := byte(cont), byte(contMax)
		switch c0 {
		case 0xE0:
			lo = 0xA0 // no overlongs
		case 0xED:
			hi = 0x9F // no surrogates
		}
		if n < 3 || s[i+1] < lo || s[i+1] > hi || s[i+2] < cont || s[i+2] > contMax {
			return utf8.RuneError, 1
		}
		return rune(c0&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
	case c0 < 0xF5:
		lo, hi := byte(cont), byte(contMax)
		switch c0 {
		case 0xF0:
			lo = 0x90 // no overlongs
		case 0xF4:
			hi = 0x8F // <= U+10FFFF
		}
		if n < 4 || s[i+1] < lo || s[i+1] > hi || s[i+2] < cont || s[i+2] > contMax || s[i+3] < cont || s[i+3] > contMax {
			return utf8.RuneError, 1
		}
		return rune(c0&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4
	default:
		return utf8.RuneError, 1
	}
}
