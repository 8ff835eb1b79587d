package protocol

import "unicode/utf8"

// The appenders below write server frames in a fixed byte-exact format: no
// whitespace, keys in the documented order. They allocate only when dst lacks
// capacity. Raw JSON arguments (offer, answer, candidate, extraVal) are copied
// verbatim and must be valid JSON values, such as a Frame's Payload; an empty
// raw value is written as null so that the output is always well-formed.

const hexDigits = "0123456789abcdef"

// safeASCII[c] reports whether the ASCII byte c can appear unescaped inside a
// JSON string literal.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendString appends s as a JSON string literal, with quotes, to dst. It
// escapes '"', '\\', control characters (\n, \r and \t by name, the others as
// \u00XX) and U+2028/U+2029 (as \u2028/\u2029, for JavaScript), and replaces
// each invalid UTF-8 byte with \ufffd. Everything else is copied verbatim.
// The output is always valid JSON; for valid UTF-8 input, encoding/json
// decodes it back to s.
func AppendString(dst []byte, s []byte) []byte {
	return appendString(dst, s)
}

func appendString[T ~string | ~[]byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending verbatim output
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s, i)
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendRaw appends the raw JSON value v, or null if v is empty.
func appendRaw(dst, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, v...)
}

// Fixed frame prefixes; FrameType recognizes frames by them.
const (
	prefixOffer     = `{"type":"offer",`
	prefixAnswer    = `{"type":"answer",`
	prefixCandidate = `{"type":"candidate",`
	frameLeave      = `{"type":"leave"}`
	prefixLogin     = `{"type":"login",`
	prefixError     = `{"type":"error",`
	prefixMessage   = `{"type":"message",`
	prefixJoin      = `{"type":"join",`
	prefixJoined    = `{"type":"joined",`
	prefixPart      = `{"type":"part",`
	prefixParted    = `{"type":"parted",`
	prefixPresence  = `{"type":"presence",`
)

// AppendOffer appends {"type":"offer","offer":<offer>,"name":<senderName>}
// to dst, with offer copied raw and senderName encoded by AppendString.
func AppendOffer(dst, offer, senderName []byte) []byte {
	dst = append(dst, prefixOffer+`"offer":`...)
	dst = appendRaw(dst, offer)
	dst = append(dst, `,"name":`...)
	dst = AppendString(dst, senderName)
	return append(dst, '}')
}

// AppendAnswer appends {"type":"answer","answer":<answer>} to dst, with
// answer copied raw.
func AppendAnswer(dst, answer []byte) []byte {
	dst = append(dst, prefixAnswer+`"answer":`...)
	dst = appendRaw(dst, answer)
	return append(dst, '}')
}

// AppendCandidate appends {"type":"candidate","candidate":<candidate>} to
// dst, with candidate copied raw.
func AppendCandidate(dst, candidate []byte) []byte {
	dst = append(dst, prefixCandidate+`"candidate":`...)
	dst = appendRaw(dst, candidate)
	return append(dst, '}')
}

// AppendLeave appends {"type":"leave"} to dst.
func AppendLeave(dst []byte) []byte {
	return append(dst, frameLeave...)
}

// AppendLogin appends {"type":"login","success":true} (or false) to dst.
func AppendLogin(dst []byte, success bool) []byte {
	if success {
		return append(dst, prefixLogin+`"success":true}`...)
	}
	return append(dst, prefixLogin+`"success":false}`...)
}

// AppendLoginExtra appends {"type":"login","success":true,"<extraKey>":<extraVal>}
// (or false) to dst: a login reply with one extra field, such as a resume
// token. extraKey is encoded like AppendString; extraVal is copied raw (for a
// string value, build it with AppendString).
func AppendLoginExtra(dst []byte, success bool, extraKey string, extraVal []byte) []byte {
	if success {
		dst = append(dst, prefixLogin+`"success":true,`...)
	} else {
		dst = append(dst, prefixLogin+`"success":false,`...)
	}
	dst = appendString(dst, extraKey)
	dst = append(dst, ':')
	dst = appendRaw(dst, extraVal)
	return append(dst, '}')
}

// AppendError appends {"type":"error","message":<msg>} to dst, with msg
// encoded like AppendString.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, prefixError+`"message":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// AppendMessage appends {"type":"message","name":<sender>,"data":<data>}, an
// app message from sender to one user, with data copied raw.
func AppendMessage(dst, sender, data []byte) []byte {
	dst = append(dst, prefixMessage+`"name":`...)
	dst = AppendString(dst, sender)
	dst = append(dst, `,"data":`...)
	dst = appendRaw(dst, data)
	return append(dst, '}')
}

// AppendRoomMessage appends
// {"type":"message","room":<room>,"name":<sender>,"data":<data>}, an app
// message from sender to the members of room, with data copied raw.
func AppendRoomMessage(dst, room, sender, data []byte) []byte {
	dst = append(dst, prefixMessage+`"room":`...)
	dst = AppendString(dst, room)
	dst = append(dst, `,"name":`...)
	dst = AppendString(dst, sender)
	dst = append(dst, `,"data":`...)
	dst = appendRaw(dst, data)
	return append(dst, '}')
}

// AppendJoinOK appends {"type":"join","success":true,"room":<room>,"users":[...]}:
// the reply to a join, with the room's other members.
func AppendJoinOK(dst, room []byte, users []string) []byte {
	dst = append(dst, prefixJoin+`"success":true,"room":`...)
	dst = AppendString(dst, room)
	dst = append(dst, `,"users":[`...)
	for i, u := range users {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, u)
	}
	return append(dst, "]}"...)
}

// AppendRoomReply appends {"type":<typ>,"success":false,"room":<room>,"message":<msg>}
// (success false) or {"type":<typ>,"success":true,"room":<room>} (msg
// empty, success true): the reply to a join (a failed one) or a part. typ
// is "join" or "part".
func AppendRoomReply(dst []byte, typ string, success bool, room []byte, msg string) []byte {
	if typ == "join" {
		dst = append(dst, prefixJoin...)
	} else {
		dst = append(dst, prefixPart...)
	}
	if success {
		dst = append(dst, `"success":true,"room":`...)
	} else {
		dst = append(dst, `"success":false,"room":`...)
	}
	dst = AppendString(dst, room)
	if msg != "" {
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, msg)
	}
	return append(dst, '}')
}

// AppendJoined appends {"type":"joined","room":<room>,"name":<name>}: name
// joined room.
func AppendJoined(dst, room, name []byte) []byte {
	dst = append(dst, prefixJoined+`"room":`...)
	dst = AppendString(dst, room)
	dst = append(dst, `,"name":`...)
	dst = AppendString(dst, name)
	return append(dst, '}')
}

// IsJoined and IsParted tell whether data is a frame that AppendJoined or
// AppendParted wrote.
func IsJoined(data []byte) bool { return hasPrefix(data, prefixJoined) }
func IsParted(data []byte) bool { return hasPrefix(data, prefixParted) }

// AppendParted appends {"type":"parted","room":<room>,"name":<name>}: name
// left room.
func AppendParted(dst, room, name []byte) []byte {
	dst = append(dst, prefixParted+`"room":`...)
	dst = AppendString(dst, room)
	dst = append(dst, `,"name":`...)
	dst = AppendString(dst, name)
	return append(dst, '}')
}

// AppendPresence appends {"type":"presence","name":<name>,"online":<online>}.
func AppendPresence(dst, name []byte, online bool) []byte {
	dst = append(dst, prefixPresence+`"name":`...)
	dst = AppendString(dst, name)
	if online {
		return append(dst, `,"online":true}`...)
	}
	return append(dst, `,"online":false}`...)
}

// FrameType reports the type of a frame produced by the appenders of this
// package from its fixed prefix, without parsing: TypeOffer for data starting
// with {"type":"offer", and likewise for answer, candidate, leave, login and
// message. It returns TypeUnknown for anything else, including error frames.
func FrameType(data []byte) Type {
	if len(data) <= len(`{"type":"`) || string(data[:len(`{"type":"`)]) != `{"type":"` {
		return TypeUnknown
	}
	switch data[len(`{"type":"`)] {
	case 'o':
		if hasPrefix(data, prefixOffer) {
			return TypeOffer
		}
	case 'a':
		if hasPrefix(data, prefixAnswer) {
			return TypeAnswer
		}
	case 'c':
		if hasPrefix(data, prefixCandidate) {
			return TypeCandidate
		}
	case 'l':
		if hasPrefix(data, frameLeave) {
			return TypeLeave
		}
		if hasPrefix(data, prefixLogin) {
			return TypeLogin
		}
	case 'm':
		if hasPrefix(data, prefixMessage) {
			return TypeMessage
		}
	}
	return TypeUnknown
}

func hasPrefix(data []byte, prefix string) bool {
	return len(data) >= len(prefix) && string(data[:len(prefix)]) == prefix
}
