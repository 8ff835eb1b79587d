package edge

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

var headerCases = [][]byte{
	{0x81, 0x85, 1, 2, 3, 4},
	{0x81, 0x05},
	{0x01, 0xfe, 0x01, 0x00, 9, 9, 9, 9},
	{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4},
	{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
	{0xf1, 0x80, 0, 0, 0, 0},
	{0x88, 0xfd},
	{0x89},
	{},
}

// checkHeaderAt holds headerAt to ws.ReadHeaderBuffer: the same header and
// length, or the same error, when b holds a whole header; "not yet" when
// the reader would run out of bytes.
func checkHeaderAt(t testing.TB, b []byte) {
	t.Helper()
	r := bytes.NewReader(b)
	want, werr := ws.ReadHeaderBuffer(r, make([]byte, ws.MaxHeaderSize))
	got, n, err := headerAt(b)
	switch {
	case werr != nil && err == nil && n == 0:
		// Ran out of bytes: headerAt says it needs more.
	case werr != nil:
		if err != werr {
			t.Fatalf("headerAt(%x): err %v, n %d; ws: %v", b, err, n, werr)
		}
	case err != nil || n != len(b)-r.Len() || got != want:
		t.Fatalf("headerAt(%x) = %+v, %d, %v; ws: %+v, %d", b, got, n, err, want, len(b)-r.Len())
	}
}

func TestHeaderAt(t *testing.T) {
	for _, b := range headerCases {
		for i := range len(b) + 1 {
			checkHeaderAt(t, b[:i])
		}
	}
}

func FuzzHeaderAt(f *testing.F) {
	for _, b := range headerCases {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkHeaderAt(t, b) })
}
