package protocol

import (
	"testing"
)

// FuzzParse checks Parse against encoding/json (see checkOracle): it never
// panics, it reports ErrInvalidJSON exactly when json.Valid is false, and for
// valid objects its type, name and payload agree with what encoding/json
// decodes. The Frame is reused across inputs, as on a connection.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte(`{"type":"offer","offer":{"a":[1,{"b":"\u00e9"}]},"name":"\ud83d\ude42"}`))
	f.Add([]byte(`{"type":"login","name":"x","name":"\ud800\udc00"}`))
	f.Add([]byte(`{"type":"message","room":"r\u00e9","data":{"x":[1,2]},"room":"\u003e"}`))
	f.Add([]byte(`{"type":"watch","names":["a","b"]}`))
	var fr Frame
	f.Fuzz(func(t *testing.T, data []byte) {
		// Leave state from an unrelated frame behind first.
		_ = Parse([]byte(`{"type":"offer","name":"\u00e9","room":"\u00e9","offer":[1]}`), &fr)
		err := Parse(data, &fr)
		checkOracle(t, data, &fr, err)
	})
}
