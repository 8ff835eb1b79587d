package edge

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/subject"
)

var headerBlocks = []string{
	"NATS/1.0\r\n\r\n",
	"NATS/1.0\r\nSignal-Seq: abc:1\r\nSignal-From: =al\r\nSignal-Sent: 123\r\nSignal-Edge: e\r\n\r\n",
	"NATS/1.0\r\nSignal-Seq:\t  x:2\r\nSignal-Seq: y:3\r\n\r\n",
	"NATS/1.0\r\nsignal-seq: lower\r\nSignal-From:\r\n\r\n",
	"NATS/1.0\r\n: empty key\r\nSignal-From: f\r\n\r\n",
	"NATS/1.0 503\r\n\r\n",
	"NATS/1.0\r\nno colon\r\n\r\n",
	"NATS/1.0\r\nSignal-Seq: s\r\n",
	"HTTP/1.0\r\n\r\n",
	"NATS/1.0\nSignal-From: lf only\n\n",
}

// checkFrameHeaders holds frameHeaders to nats.go's decoding: the same
// first values, and a block refused where nats.go fails or reports a
// status.
func checkFrameHeaders(t testing.TB, block []byte) {
	t.Helper()
	fh, ok := frameHeaders(block)
	h, err := nats.DecodeHeadersMsg(block)
	if err != nil || h.Get("Status") != "" {
		if ok {
			t.Fatalf("frameHeaders(%q) took a block nats.go does not: %v %v", block, err, h)
		}
		return
	}
	if !ok {
		t.Fatalf("frameHeaders(%q) refused a block nats.go reads: %v", block, h)
	}
	first := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if string(fh.seq) != first(subject.HeaderSeq) || string(fh.from) != first(subject.HeaderFrom) ||
		string(fh.edge) != first(subject.HeaderEdge) || string(fh.sent) != first(subject.HeaderSent) {
		t.Fatalf("frameHeaders(%q) = %q; nats.go %v", block, fh, h)
	}
}

func TestFrameHeaders(t *testing.T) {
	for _, b := range headerBlocks {
		checkFrameHeaders(t, []byte(b))
	}
	r := rand.New(rand.NewPCG(1, 2))
	parts := []string{"NATS/1.0", "\r\n", "\n", subject.HeaderSeq, subject.HeaderFrom, subject.HeaderEdge, subject.HeaderSent, ":", " ", "\t", "v", "x:1"}
	for range 20000 {
		var b strings.Builder
		for range r.IntN(14) {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		checkFrameHeaders(t, []byte(b.String()))
	}
}

func FuzzFrameHeaders(f *testing.F) {
	for _, b := range headerBlocks {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFrameHeaders(t, b) })
}

// TestKeepFrame: the kept frame holds copies, in one allocation.
func TestKeepFrame(t *testing.T) {
	data, seq, from, edge, reply := []byte(`{"type":"leave"}`), []byte("s:1"), []byte("=al"), []byte("e1"), []byte("_INBOX.x.1.=al")
	h := frameHdr{seq: seq, from: from, edge: edge}
	f := keepFrame(data, reply, h)
	for _, b := range [][]byte{data, seq, from, edge, reply} {
		for i := range b {
			b[i] = 'X'
		}
	}
	if string(f.data) != `{"type":"leave"}` || f.seq != "s:1" || f.from != "=al" || f.edge != "e1" || f.reply != "_INBOX.x.1.=al" {
		t.Fatalf("%+v", f)
	}
	if cap(f.data) != len(f.data) {
		t.Fatal("data's capacity reaches into the strings")
	}
	if f := keepFrame(data, nil, frameHdr{}); f.seq != "" || f.from != "" || f.edge != "" || f.reply != "" || !bytes.Equal(f.data, data) {
		t.Fatalf("%+v", f)
	}
	if !raceEnabled {
		if n := testing.AllocsPerRun(100, func() { _ = keepFrame(data, reply, h) }); n != 1 {
			t.Errorf("keepFrame: %.1f allocations, want 1", n)
		}
	}
}
