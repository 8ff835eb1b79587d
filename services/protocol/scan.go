package protocol

import (
	"encoding/binary"
	"math/bits"
)

// maxDepth is the maximum nesting depth of arrays and objects, counting the
// top-level value. It equals encoding/json's limit so that Parse and
// encoding/json.Valid agree on every input.
const maxDepth = 10000

// depthStack records, for every open container depth 1..maxDepth, whether the
// container is an object (bit set) or an array (bit clear). A bit is always
// written when its container is opened before it is read, so the stack never
// needs clearing.
type depthStack [maxDepth/64 + 1]uint64

func (s *depthStack) push(depth int, object bool) {
	w, b := depth>>6, uint(depth&63)
	if object {
		s[w] |= 1 << b
	} else {
		s[w] &^= 1 << b
	}
}

func (s *depthStack) isObject(depth int) bool {
	return s[depth>>6]&(1<<uint(depth&63)) != 0
}

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t'
}

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// specialMask returns a word whose lowest set bit marks (in little-endian byte
// order) the first byte of x that is '"', '\\' or a control character, or 0 if
// there is none. Bits above the lowest one may be spurious (borrows), but the
// lowest one is exact.
func specialMask(x uint64) uint64 {
	q := x ^ (lsb * '"')
	b := x ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((b - lsb) &^ b) | ((x - lsb*0x20) &^ x)) & msb
}

// skipString validates the string literal starting at data[i] == '"' and
// returns the index just past its closing quote, or -1 if it is malformed.
// Like encoding/json, bytes >= 0x80 are not checked for UTF-8 validity.
func skipString(data []byte, i int) int {
	i++
	for {
		for i+8 <= len(data) {
			m := specialMask(binary.LittleEndian.Uint64(data[i:]))
			if m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(data) {
			return -1
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= len(data) {
				return -1
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(data) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) || !isHex(data[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++
		}
	}
}

func isHex(c byte) bool {
	return c-'0' < 10 || (c|0x20)-'a' < 6
}

func isDigit(c byte) bool { return c-'0' < 10 }

// skipNumber validates the number starting at data[i] and returns the index
// just past it, or -1.
func skipNumber(data []byte, i int) int {
	n := len(data)
	if data[i] == '-' {
		i++
		if i >= n {
			return -1
		}
	}
	switch c := data[i]; {
	case c == '0':
		i++
	case c >= '1' && c <= '9':
		i++
		for i < n && isDigit(data[i]) {
			i++
		}
	default:
		return -1
	}
	if i < n && data[i] == '.' {
		i++
		if i >= n || !isDigit(data[i]) {
			return -1
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	if i < n && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n || !isDigit(data[i]) {
			return -1
		}
		for i < n && isDigit(data[i]) {
			i++
		}
	}
	return i
}

// skipLiteral validates that data[i:] starts with lit and returns the index
// just past it, or -1.
func skipLiteral(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipScalar validates the non-container value starting at data[i] and
// returns the index just past it, or -1.
func skipScalar(data []byte, i int) int {
	switch data[i] {
	case '"':
		return skipString(data, i)
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	default:
		return skipNumber(data, i)
	}
}

// skipValue validates the JSON value starting at data[i] (which must not be
// whitespace) and returns the index just past it, or -1 if it is malformed or
// nests deeper than maxDepth. depth is the number of containers already open
// around the value. It is iterative: the nesting is tracked in st, not on the
// goroutine stack.
func skipValue(data []byte, i, depth int, st *depthStack) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '{', '[':
	default:
		return skipScalar(data, i)
	}
	base := depth
	n := len(data)
	for {
		// Expecting a value at data[i] (i < n, not whitespace).
		switch c := data[i]; c {
		case '{', '[':
			depth++
			if depth > maxDepth {
				return -1
			}
			obj := c == '{'
			st.push(depth, obj)
			i = skipSpace(data, i+1)
			if i >= n {
				return -1
			}
			if obj {
				if data[i] == '}' {
					i++
					depth--
					break
				}
				if i = skipKey(data, i); i < 0 {
					return -1
				}
				continue // i is at the member value
			}
			if data[i] == ']' {
				i++
				depth--
				break
			}
			continue // i is at the first element
		default:
			if i = skipScalar(data, i); i < 0 {
				return -1
			}
		}
		// A value ended at i; close containers as needed.
		for {
			if depth == base {
				return i
			}
			i = skipSpace(data, i)
			if i >= n {
				return -1
			}
			c := data[i]
			if st.isObject(depth) {
				if c == ',' {
					if i = skipKey(data, skipSpace(data, i+1)); i < 0 {
						return -1
					}
					break
				}
				if c != '}' {
					return -1
				}
			} else {
				if c == ',' {
					if i = skipSpace(data, i+1); i >= n {
						return -1
					}
					break
				}
				if c != ']' {
					return -1
				}
			}
			i++
			depth--
		}
	}
}

// skipKey validates `"key" :` followed by optional whitespace, starting at
// data[i], and returns the index of the member value (not whitespace), or -1.
func skipKey(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return -1
	}
	if i = skipString(data, i); i < 0 {
		return -1
	}
	i = skipSpace(data, i)
	if i >= len(data) || data[i] != ':' {
		return -1
	}
	if i = skipSpace(data, i+1); i >= len(data) {
		return -1
	}
	return i
}
