package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// checkOracle checks the outcome of Parse(data, f) == err against
// encoding/json, which serves as the reference implementation. It is shared by
// the table tests and FuzzParse.
func checkOracle(t testing.TB, data []byte, f *Frame, err error) {
	t.Helper()
	valid := json.Valid(data)
	if (err == ErrInvalidJSON) == valid {
		t.Fatalf("Parse error %v, but json.Valid = %v", err, valid)
	}
	if !valid {
		checkZeroFrame(t, f)
		return
	}
	isObject := data[skipSpace(data, 0)] == '{'
	if (err == ErrNotObject) == isObject {
		t.Fatalf("Parse error %v, but the text is an object: %v", err, isObject)
	}
	if !isObject {
		checkZeroFrame(t, f)
		return
	}

	// Duplicate keys: the map keeps the last value, like Parse.
	var m map[string]json.RawMessage
	if uerr := json.Unmarshal(data, &m); uerr != nil {
		t.Fatalf("json.Unmarshal of a valid object: %v", uerr)
	}

	checkStringField(t, m, "name", f.Name, f.HasName, f.NameIsString)
	checkStringField(t, m, "room", f.Room, f.HasRoom, f.RoomIsString)

	typeRaw, hasType := m["type"]
	switch {
	case !hasType || string(typeRaw) == "null":
		if err != ErrMissingType {
			t.Fatalf("Parse error %v, want ErrMissingType", err)
		}
	case typeRaw[0] != '"':
		if err != ErrTypeNotString {
			t.Fatalf("Parse error %v, want ErrTypeNotString", err)
		}
	default:
		if err != nil {
			t.Fatalf("Parse error %v, want nil", err)
		}
		var typ string
		if uerr := json.Unmarshal(typeRaw, &typ); uerr != nil {
			t.Fatal(uerr)
		}
		if f.RawType == nil || string(f.RawType) != typ {
			t.Fatalf("RawType = %q, want %q", f.RawType, typ)
		}
		wantType := map[string]Type{
			"login": TypeLogin, "offer": TypeOffer, "answer": TypeAnswer,
			"candidate": TypeCandidate, "leave": TypeLeave, "join": TypeJoin,
			"part": TypePart, "message": TypeMessage, "watch": TypeWatch, "unwatch": TypeUnwatch,
		}[typ]
		if f.Type != wantType {
			t.Fatalf("Type = %v, want %v", f.Type, wantType)
		}
		payloadKey := map[Type]string{
			TypeOffer: "offer", TypeAnswer: "answer", TypeCandidate: "candidate",
			TypeMessage: "data", TypeWatch: "names", TypeUnwatch: "names",
		}[wantType]
		want, ok := m[payloadKey]
		if payloadKey == "" || !ok {
			if f.Payload != nil {
				t.Fatalf("Payload = %q, want nil", f.Payload)
			}
			return
		}
		if f.Payload == nil || !json.Valid(f.Payload) {
			t.Fatalf("Payload = %q, want valid JSON %q", f.Payload, want)
		}
		// Byte-exact relay: json.RawMessage holds the value's raw bytes.
		if !bytes.Equal(f.Payload, want) {
			t.Fatalf("Payload = %q, want %q", f.Payload, want)
		}
		// And semantically equal, as encoding/json sees it.
		if a, b := remarshal(t, f.Payload), remarshal(t, want); !bytes.Equal(a, b) {
			t.Fatalf("Payload re-marshals to %q, want %q", a, b)
		}
		return
	}
	if f.Type != TypeUnknown || f.RawType != nil || f.Payload != nil {
		t.Fatalf("on error %v: Type %v RawType %q Payload %q, want zero", err, f.Type, f.RawType, f.Payload)
	}
}

// checkStringField checks a decoded string member (name, room) of f against
// the oracle's map.
func checkStringField(t testing.TB, m map[string]json.RawMessage, key string, got []byte, has, isString bool) {
	t.Helper()
	raw, ok := m[key]
	if has != ok {
		t.Fatalf("Has %s = %v, want %v", key, has, ok)
	}
	wantString := ok && raw[0] == '"'
	if isString != wantString {
		t.Fatalf("%s is string = %v, want %v", key, isString, wantString)
	}
	if wantString {
		var want string
		if uerr := json.Unmarshal(raw, &want); uerr != nil {
			t.Fatal(uerr)
		}
		if got == nil || string(got) != want {
			t.Fatalf("%s = %q (nil %v), want %q", key, got, got == nil, want)
		}
	} else if got != nil {
		t.Fatalf("%s = %q, want nil", key, got)
	}
}

func checkZeroFrame(t testing.TB, f *Frame) {
	t.Helper()
	if f.Type != TypeUnknown || f.RawType != nil || f.Name != nil || f.HasName || f.NameIsString || f.Payload != nil ||
		f.Room != nil || f.HasRoom || f.RoomIsString {
		t.Fatalf("frame not reset: Type %v RawType %q Name %q HasName %v NameIsString %v Payload %q",
			f.Type, f.RawType, f.Name, f.HasName, f.NameIsString, f.Payload)
	}
}

// remarshal decodes a JSON value (numbers kept exact) and encodes it again,
// giving a canonical form for semantic comparison.
func remarshal(t testing.TB, data []byte) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return out
}
