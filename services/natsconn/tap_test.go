package natsconn

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/services/natstest"
)

// chunkConn serves data in the chunk sizes of sizes (then the rest at
// once), then io.EOF.
type chunkConn struct {
	net.Conn
	data  []byte
	sizes []int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n, c.sizes = min(c.sizes[0], n), c.sizes[1:]
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

type tapOp struct {
	raw                       []byte
	take                      bool
	subj, reply, header, data string
	msg                       bool
}

// tapStream makes n random server ops: INFO, PING, PONG, +OK, -ERR, and
// MSG and HMSG on user subjects (taken or not, by their payload) and
// others; payloads hold protocol-looking bytes.
func tapStream(r *rand.Rand, n int) []tapOp {
	ops := []tapOp{{raw: []byte(`INFO {"server_id":"x","headers":true,"max_payload":1048576}` + "\r\n")}}
	words := []string{"MSG", "HMSG user.x 1 5 5\r\n", "\r\n", "PING\r\n", "user.", "x"}
	payload := func() string {
		var b strings.Builder
		for range r.IntN(6) {
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	for range n {
		switch r.IntN(8) {
		case 0:
			ops = append(ops, tapOp{raw: []byte("PING\r\n")})
		case 1:
			ops = append(ops, tapOp{raw: []byte("PONG\r\n")})
		case 2:
			ops = append(ops, tapOp{raw: []byte("+OK\r\n")})
		case 3:
			ops = append(ops, tapOp{raw: []byte("INFO {\"connect_urls\":[\"a\"]}\r\n")})
		default:
			o := tapOp{msg: true, data: payload()}
			o.subj = []string{"user.alice", "user.bob", "room.x", "_INBOX.abc.1", "user"}[r.IntN(5)]
			if r.IntN(2) == 0 {
				o.reply = "_INBOX.r." + fmt.Sprint(r.IntN(100))
			}
			sp := []string{" ", "\t", "  "}[r.IntN(3)]
			if r.IntN(2) == 0 {
				o.header = "NATS/1.0\r\nSignal-Seq: s:" + fmt.Sprint(r.IntN(9)) + "\r\n\r\n"
				line := "HMSG" + sp + o.subj + " 7 "
				if o.reply != "" {
					line += o.reply + " "
				}
				line += fmt.Sprintf("%d %d\r\n", len(o.header), len(o.header)+len(o.data))
				o.raw = []byte(line + o.header + o.data + "\r\n")
			} else {
				line := "MSG" + sp + o.subj + " 7 "
				if o.reply != "" {
					line += o.reply + " "
				}
				line += fmt.Sprintf("%d\r\n", len(o.data))
				o.raw = []byte(line + o.data + "\r\n")
			}
			o.take = strings.HasPrefix(o.subj, "user.") && len(o.data)%2 == 0
			ops = append(ops, o)
		}
	}
	return ops
}

// checkTap reads ops through a tap in chunks of sizes: nats.go must read
// exactly the ops not taken, and the taker get the taken ones, in order.
func checkTap(t *testing.T, ops []tapOp, sizes []int, bufSize int) {
	t.Helper()
	var all, want bytes.Buffer
	var wantTaken []tapOp
	for _, o := range ops {
		all.Write(o.raw)
		if o.take {
			wantTaken = append(wantTaken, o)
		} else {
			want.Write(o.raw)
		}
	}
	tap := NewTap(TapPrefix)
	var taken []tapOp
	tap.SetTaker(func(subj, reply, header, data []byte) bool {
		if len(data)%2 != 0 {
			return false
		}
		taken = append(taken, tapOp{subj: string(subj), reply: string(reply), header: string(header), data: string(data)})
		return true
	})
	c := tap.conn(&chunkConn{data: all.Bytes(), sizes: sizes})
	var got bytes.Buffer
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("nats.go read\n%q\nwant\n%q", got.Bytes(), want.Bytes())
	}
	if len(taken) != len(wantTaken) {
		t.Fatalf("taken %d, want %d", len(taken), len(wantTaken))
	}
	for i, o := range wantTaken {
		if g := taken[i]; g.subj != o.subj || g.reply != o.reply || g.header != o.header || g.data != o.data {
			t.Fatalf("taken %d: %+v, want %+v", i, g, o)
		}
	}
	if tap.Taken() != uint64(len(wantTaken)) {
		t.Fatalf("Taken() = %d, want %d", tap.Taken(), len(wantTaken))
	}
}

// TestTapStream: random op streams, read in random chunks into buffers of
// random sizes.
func TestTapStream(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 1))
		ops := tapStream(r, 1+r.IntN(40))
		var sizes []int
		for range 50 {
			sizes = append(sizes, 1+r.IntN([]int{3, 40, 5000}[r.IntN(3)]))
		}
		checkTap(t, ops, sizes, 1+r.IntN(300))
	}
}

// TestTapBypass: what the tap does not expect passes through untouched,
// from then on, whoever would take it.
func TestTapBypass(t *testing.T) {
	msg := "MSG user.alice 1 2\r\nhi\r\n"
	for i, in := range []string{
		"\x16\x03\x01 tls first" + msg,
		"HTTP/1.1 101 Switching Protocols\r\n\r\n" + msg,
		`INFO {"tls_required":true}` + "\r\n" + msg,
		`INFO {"tls_available":true}` + "\r\n" + msg,
		"INFO {}\r\nmsg user.alice 1 2\r\nhi\r\n" + msg,
		"INFO {}\r\nMSG user.alice 1 x\r\nhi\r\n" + msg,
		"INFO {}\r\nMSG user.alice 1 2 3 4 5\r\nhi\r\n" + msg,
		"INFO {}\r\nMSG user.alice 1 2\r\nhiXX" + msg,
		"INFO {}\r\nMSG " + strings.Repeat("a", 5000) + " 1 2\r\nhi\r\n" + msg, // a control line longer than 4 KiB, in pieces
	} {
		tap := NewTap(TapPrefix)
		tap.SetTaker(func(subj, reply, header, data []byte) bool { return true })
		var sizes []int
		if i == 8 {
			sizes = []int{9, 4200}
		}
		c := tap.conn(&chunkConn{data: []byte(in), sizes: sizes})
		got, err := io.ReadAll(c)
		if err != nil || string(got) != in {
			t.Errorf("%.40q: read %.60q, %v; want it all", in, got, err)
		}
	}
}

// TestTapDeadline: a read deadline ends one Read without losing what the
// tap holds back.
func TestTapDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tap := NewTap(TapPrefix)
	var taken int
	tap.SetTaker(func(subj, reply, header, data []byte) bool { taken++; return true })
	c := tap.conn(b)
	go func() {
		_, _ = a.Write([]byte("INFO {}\r\nMSG user.alice 1 2\r\nh"))
	}()
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if n != len("INFO {}\r\n") || err != nil {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if n, err = c.Read(buf); n != 0 || !isTimeout(err) {
		t.Fatalf("read %q, %v; want the deadline", buf[:n], err)
	}
	_ = c.SetReadDeadline(time.Time{})
	go func() { _, _ = a.Write([]byte("i\r\nPING\r\n")) }()
	if n, err = c.Read(buf); string(buf[:n]) != "PING\r\n" || err != nil || taken != 1 {
		t.Fatalf("read %q, %v, taken %d; want PING after the taken message", buf[:n], err, taken)
	}
}

func FuzzTap(f *testing.F) {
	f.Add(uint64(1), uint64(7), 3)
	f.Fuzz(func(t *testing.T, seed, chunks uint64, buf int) {
		r := rand.New(rand.NewPCG(seed, chunks))
		ops := tapStream(r, 1+r.IntN(30))
		var sizes []int
		for range 40 {
			sizes = append(sizes, 1+r.IntN(100))
		}
		checkTap(t, ops, sizes, 1+(buf&0xfff))
	})
}

// TestWriteDirect: ops written directly reach the server between
// nats.go's own publishes, from many goroutines, every one intact; and
// the tap takes what arrives on users' subjects.
func TestWriteDirect(t *testing.T) {
	s := natstest.Server(t)
	nc, err := Connect(Config{URL: s.ClientURL(), Name: "direct", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitConnected(ctx, nc); err != nil {
		t.Fatal(err)
	}
	tap := TapOf(nc)
	if tap == nil {
		t.Fatal("no tap")
	}
	var mu sync.Mutex
	got := map[string]int{}
	tap.SetTaker(func(subj, reply, header, data []byte) bool {
		mu.Lock()
		got[string(data)]++
		mu.Unlock()
		return true
	})
	sub, err := nc.SubscribeSync("user.me")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const per = 300
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				data := fmt.Sprintf("g%d-%d", g, i)
				if g%2 == 0 {
					_ = nc.PublishMsg(&nats.Msg{Subject: "user.me", Header: nats.Header{"K": {"v"}}, Data: []byte(data)})
					continue
				}
				hdr := "NATS/1.0\r\nK: v\r\n\r\n"
				op := fmt.Sprintf("HPUB user.me %d %d\r\n%s%s\r\n", len(hdr), len(hdr)+len(data), hdr, data)
				if err := tap.WriteDirect(nc, []byte(op)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 4*per {
		t.Fatalf("%d distinct messages taken, want %d", len(got), 4*per)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("%s taken %d times", k, n)
		}
	}
	if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
		t.Fatal("nats.go got a message the tap took")
	}
}
