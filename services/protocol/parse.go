package protocol

import (
	"bytes"
	"errors"
)

// Type is the type of a frame.
type Type uint8

const (
	TypeUnknown   Type = iota // a string type we do not know
	TypeLogin                 // "login"
	TypeOffer                 // "offer"
	TypeAnswer                // "answer"
	TypeCandidate             // "candidate"
	TypeLeave                 // "leave"
	TypeJoin                  // "join"
	TypePart                  // "part"
	TypeMessage               // "message"
	TypeWatch                 // "watch"
	TypeUnwatch               // "unwatch"
)

// String returns the wire name of t ("login", "offer", ...), or "unknown" for
// TypeUnknown and any value that is not a defined Type.
func (t Type) String() string {
	switch t {
	case TypeLogin:
		return "login"
	case TypeOffer:
		return "offer"
	case TypeAnswer:
		return "answer"
	case TypeCandidate:
		return "candidate"
	case TypeLeave:
		return "leave"
	case TypeJoin:
		return "join"
	case TypePart:
		return "part"
	case TypeMessage:
		return "message"
	case TypeWatch:
		return "watch"
	case TypeUnwatch:
		return "unwatch"
	default:
		return "unknown"
	}
}

// typeOf maps a decoded type string to its Type.
func typeOf(s []byte) Type {
	switch string(s) {
	case "login":
		return TypeLogin
	case "offer":
		return TypeOffer
	case "answer":
		return TypeAnswer
	case "candidate":
		return TypeCandidate
	case "leave":
		return TypeLeave
	case "join":
		return TypeJoin
	case "part":
		return TypePart
	case "message":
		return TypeMessage
	case "watch":
		return TypeWatch
	case "unwatch":
		return TypeUnwatch
	default:
		return TypeUnknown
	}
}

// Frame is a parsed client frame. Its byte slices alias the input data or the
// Frame's own scratch buffer; they are valid until the next Parse call on the
// same Frame or until data is modified. Copy them to keep them longer. The
// slices have their capacity clipped to their length, so appending to one
// never overwrites the input or another field. Reuse one Frame per
// connection: the zero value is ready to use, and its scratch space is kept
// across calls so that steady-state parsing does not allocate. A Frame must
// not be used by several goroutines at once.
type Frame struct {
	Type Type
	// RawType is the decoded "type" string (for error messages), nil if the
	// key is absent or its value is not a string.
	RawType []byte
	// Name is the decoded value of "name" (JSON escapes such as \u00e9 and
	// surrogate pairs decoded to UTF-8). It is nil if the key is absent or its
	// value is not a string, and non-nil (possibly empty) if it is a string.
	Name []byte
	// HasName reports whether the "name" key is present (with any value).
	HasName bool
	// NameIsString reports whether the value of "name" is a string.
	NameIsString bool
	// Room is the decoded value of "room", like Name: nil if the key is
	// absent or not a string. RoomIsString reports whether it is a string.
	Room         []byte
	HasRoom      bool
	RoomIsString bool
	// Payload holds the raw JSON bytes, exactly as written by the client
	// (without surrounding whitespace), of the value of the field named after
	// the type: "offer" for TypeOffer, "answer" for TypeAnswer, "candidate"
	// for TypeCandidate, "data" for TypeMessage, "names" for TypeWatch and
	// TypeUnwatch. It is nil if that field is absent and always nil for
	// other types. A JSON null payload is []byte("null"), not nil.
	Payload []byte

	scratch []byte     // decoded keys, type and name
	stack   depthStack // nesting state of the validator
}

// Errors returned by Parse.
var (
	ErrInvalidJSON   = errors.New("invalid JSON")
	ErrNotObject     = errors.New("frame is not a JSON object")
	ErrMissingType   = errors.New("missing type")
	ErrTypeNotString = errors.New("type is not a string")
)

// member keys Parse is interested in.
const (
	keyOther = iota
	keyType
	keyName
	keyOffer
	keyAnswer
	keyCandidate
	keyRoom
	keyData
	keyNames
	numKeys
)

func keyOf(s []byte) int {
	switch string(s) {
	case "type":
		return keyType
	case "name":
		return keyName
	case "offer":
		return keyOffer
	case "answer":
		return keyAnswer
	case "candidate":
		return keyCandidate
	case "room":
		return keyRoom
	case "data":
		return keyData
	case "names":
		return keyNames
	default:
		return keyOther
	}
}

// span is the location data[start:end] of a member value; end == 0 means the
// member is absent (a value never ends at offset 0).
type span struct{ start, end int }

// Parse parses data into f. data must be a complete JSON text consisting of
// exactly one JSON object, optionally surrounded by whitespace.
//
// The entire text is validated with the same rules as encoding/json.Valid,
// including its nesting limit (see the package documentation). Only the
// top-level object's keys are examined, iteratively, so deeply nested values
// cannot overflow the stack. When a key occurs more than once, the last
// occurrence wins (as with JavaScript's JSON.parse and encoding/json). Keys
// are compared after decoding, so "\u0074ype" is "type". Unknown keys are
// ignored. A "type" that is a string but not one of the known types yields
// TypeUnknown and no error.
//
// Parse returns ErrInvalidJSON if data is not valid JSON, ErrNotObject if it
// is valid JSON but not an object, ErrMissingType if there is no "type" key or
// its value is null, and ErrTypeNotString if its value is not a string. On
// ErrInvalidJSON and ErrNotObject all exported fields of f are zero; on
// ErrMissingType and ErrTypeNotString the name and room fields are still filled in
// (Type is TypeUnknown, RawType and Payload are nil).
//
// See Frame for how long the slices stored in f remain valid.
func Parse(data []byte, f *Frame) error {
	f.Type = TypeUnknown
	f.RawType = nil
	f.Name = nil
	f.HasName = false
	f.NameIsString = false
	f.Room = nil
	f.HasRoom = false
	f.RoomIsString = false
	f.Payload = nil

	n := len(data)
	i := skipSpace(data, 0)
	if i >= n {
		return ErrInvalidJSON
	}
	if data[i] != '{' {
		if i = skipValue(data, i, 0, &f.stack); i < 0 || skipSpace(data, i) != n {
			return ErrInvalidJSON
		}
		return ErrNotObject
	}

	var spans [numKeys]span
	if i = skipSpace(data, i+1); i >= n {
		return ErrInvalidJSON
	}
	if data[i] == '}' {
		i++
	} else {
		for {
			if data[i] != '"' {
				return ErrInvalidJSON
			}
			ks := i + 1
			if i = skipString(data, i); i < 0 {
				return ErrInvalidJSON
			}
			key := data[ks : i-1]
			if i = skipSpace(data, i); i >= n || data[i] != ':' {
				return ErrInvalidJSON
			}
			vs := skipSpace(data, i+1)
			if i = skipValue(data, vs, 1, &f.stack); i < 0 {
				return ErrInvalidJSON
			}
			var k int
			if bytes.IndexByte(key, '\\') < 0 {
				k = keyOf(key)
			} else if len(key) <= 6*len("candidate") {
				// An escaped key decodes to at least one byte per escape
				// (at most 6 input bytes), so longer keys cannot match.
				f.scratch = appendUnescaped(f.scratch[:0], key)
				k = keyOf(f.scratch)
			}
			if k != keyOther {
				spans[k] = span{vs, i}
			}
			if i = skipSpace(data, i); i >= n {
				return ErrInvalidJSON
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return ErrInvalidJSON
			}
			if i = skipSpace(data, i+1); i >= n {
				return ErrInvalidJSON
			}
		}
	}
	if skipSpace(data, i) != n {
		return ErrInvalidJSON
	}

	// The text is valid; interpret the members. Decoded strings go to
	// f.scratch; slices into it are taken only after the last append.
	f.scratch = f.scratch[:0]
	typeStart, typeEnd := -1, -1 // RawType = f.scratch[typeStart:typeEnd] if typeStart >= 0
	nameStart, nameEnd := -1, -1
	roomStart, roomEnd := -1, -1
	var err error
	var rawType []byte
	if sp := spans[keyType]; sp.end == 0 || data[sp.start] == 'n' {
		err = ErrMissingType
	} else if data[sp.start] != '"' {
		err = ErrTypeNotString
	} else if s := data[sp.start+1 : sp.end-1]; needsUnescape(s) {
		typeStart = len(f.scratch)
		f.scratch = appendUnescaped(f.scratch, s)
		typeEnd = len(f.scratch)
	} else {
		rawType = s[:len(s):len(s)]
	}
	var name []byte
	if sp := spans[keyName]; sp.end != 0 {
		f.HasName = true
		if data[sp.start] == '"' {
			f.NameIsString = true
			if s := data[sp.start+1 : sp.end-1]; needsUnescape(s) {
				nameStart = len(f.scratch)
				f.scratch = appendUnescaped(f.scratch, s)
				nameEnd = len(f.scratch)
			} else {
				name = s[:len(s):len(s)]
			}
		}
	}
	var room []byte
	if sp := spans[keyRoom]; sp.end != 0 {
		f.HasRoom = true
		if data[sp.start] == '"' {
			f.RoomIsString = true
			if s := data[sp.start+1 : sp.end-1]; needsUnescape(s) {
				roomStart = len(f.scratch)
				f.scratch = appendUnescaped(f.scratch, s)
				roomEnd = len(f.scratch)
			} else {
				room = s[:len(s):len(s)]
			}
		}
	}
	if typeStart >= 0 {
		rawType = f.scratch[typeStart:typeEnd:typeEnd]
	}
	if nameStart >= 0 {
		name = f.scratch[nameStart:nameEnd:nameEnd]
	}
	if roomStart >= 0 {
		room = f.scratch[roomStart:roomEnd:roomEnd]
	}
	f.Name = name
	f.Room = room
	if err != nil {
		return err
	}
	f.RawType = rawType
	f.Type = typeOf(rawType)
	var sp span
	switch f.Type {
	case TypeOffer:
		sp = spans[keyOffer]
	case TypeAnswer:
		sp = spans[keyAnswer]
	case TypeCandidate:
		sp = spans[keyCandidate]
	case TypeMessage:
		sp = spans[keyData]
	case TypeWatch, TypeUnwatch:
		sp = spans[keyNames]
	}
	if sp.end != 0 {
		f.Payload = data[sp.start:sp.end:sp.end]
	}
	return nil
}
