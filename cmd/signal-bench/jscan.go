package main

import "unicode/utf8"

// A small JSON scanner that finds the top-level fields of an object without
// allocating or unescaping: the tool needs a handful of fields of short
// frames, and must not be the bottleneck.

// objScanner walks the fields of one JSON object.
type objScanner struct {
	b   []byte
	i   int
	bad bool
}

// scanObject starts scanning b, which must hold a JSON object.
func scanObject(b []byte) (objScanner, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return objScanner{}, false
	}
	return objScanner{b: b, i: i + 1}, true
}

// next returns the next field: its key (raw, without quotes) and its value
// (raw JSON). ok is false at the end of the object or on malformed input
// (then bad is set).
func (s *objScanner) next() (key, val []byte, ok bool) {
	b := s.b
	i := skipSpace(b, s.i)
	if i >= len(b) {
		s.bad = true
		return nil, nil, false
	}
	if b[i] == '}' {
		s.i = i + 1
		return nil, nil, false
	}
	if b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		s.bad = true
		return nil, nil, false
	}
	end, okv := skipString(b, i)
	if !okv {
		s.bad = true
		return nil, nil, false
	}
	key = b[i+1 : end-1]
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		s.bad = true
		return nil, nil, false
	}
	i = skipSpace(b, i+1)
	end, okv = skipValue(b, i)
	if !okv {
		s.bad = true
		return nil, nil, false
	}
	val = b[i:end]
	s.i = end
	return key, val, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string that starts at b[i].
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index just past the JSON value that starts at b[i].
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := skipString(b, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) {
			c := b[j]
			if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			j++
		}
		if j == i {
			return 0, false
		}
		return j, true
	}
}

// frame holds the fields of a server frame the tool looks at, as raw
// bytes pointing into the message.
type frame struct {
	typ     []byte // without quotes
	name    []byte // without quotes, not unescaped
	success []byte // raw: true or false
	payload []byte // raw value of offer, answer or candidate
	message []byte // raw value of message (error frames)
}

// parseFrame fills f from a JSON object. It reports false when m is not a
// JSON object with a string "type".
func parseFrame(m []byte, f *frame) bool {
	*f = frame{}
	s, ok := scanObject(m)
	if !ok {
		return false
	}
	for {
		k, v, ok := s.next()
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			f.typ = unquote(v)
			if f.typ == nil {
				return false
			}
		case "name":
			f.name = unquote(v)
		case "success":
			f.success = v
		case "offer", "answer", "candidate":
			f.payload = v
		case "message":
			f.message = v
		}
	}
	return !s.bad && f.typ != nil
}

// unquote returns the content of a JSON string value, or nil if v is not a
// string. Escapes are left as they are.
func unquote(v []byte) []byte {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil
	}
	return v[1 : len(v)-1]
}

// Relay payloads are {"p":PAIR,"s":SEQ,"t":NANOS[,"x":"padding"]}.

// parsePayload reads the pair id, sequence number and send time of a relay
// payload.
func parsePayload(v []byte) (pair, seq, ts int64, ok bool) {
	s, ok := scanObject(v)
	if !ok {
		return 0, 0, 0, false
	}
	var have int
	for {
		k, val, ok := s.next()
		if !ok {
			break
		}
		switch string(k) {
		case "p":
			pair, ok = atoi(val)
			have |= 1
		case "s":
			seq, ok = atoi(val)
			have |= 2
		case "t":
			ts, ok = atoi(val)
			have |= 4
		default:
			continue
		}
		if !ok {
			return 0, 0, 0, false
		}
	}
	return pair, seq, ts, !s.bad && have == 7
}

// atoi parses a non-negative decimal integer.
func atoi(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
