package linkdelay

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func listen(t *testing.T, target string, delay time.Duration) *Link {
	t.Helper()
	l, err := Listen("127.0.0.1:0", target, delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip writes one byte and reads its echo.
func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// A round trip through the link pays the delay twice, and not much more.
func TestDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	l := listen(t, echoServer(t), delay)
	c := dial(t, l.Addr())
	var best time.Duration
	for i := range 5 {
		rt := roundTrip(t, c)
		if rt < 2*delay {
			t.Fatalf("round trip %d took %v, less than twice the delay %v", i, rt, delay)
		}
		if i == 0 || rt < best {
			best = rt
		}
	}
	// The best of five bounds the overhead without trusting one sample on
	// a loaded machine.
	if best > 2*delay+40*time.Millisecond {
		t.Fatalf("best round trip %v; want about %v", best, 2*delay)
	}
	st := l.Stats()
	if st.Accepted != 1 || st.Open != 1 || st.BytesOut != 5 || st.BytesIn != 5 || st.Mode != "up" {
		t.Fatalf("stats %+v", st)
	}
}

// Bytes arrive in order and complete, however the writes are cut up, and
// a half close travels behind them.
func TestOrder(t *testing.T) {
	l := listen(t, echoServer(t), 2*time.Millisecond)
	c := dial(t, l.Addr())
	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		rest := want
		for i := 1; len(rest) > 0; i = i*7%4093 + 1 {
			n := min(i, len(rest))
			if _, err := c.Write(rest[:n]); err != nil {
				errc <- err
				return
			}
			rest = rest[n:]
		}
		errc <- c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c) // ends when the echo's half close arrives
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d, or they differ", len(got), len(want))
	}
}

// Cut closes the open connections and refuses new ones until Restore.
func TestCutRestore(t *testing.T) {
	l := listen(t, echoServer(t), time.Millisecond)
	c := dial(t, l.Addr())
	roundTrip(t, c)
	l.Cut()
	if _, err := io.ReadAll(c); err != nil {
		t.Logf("open connection after the cut: %v", err) // a reset is fine too
	}
	if n, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		n.Close()
		t.Fatal("a connection while cut was accepted")
	}
	if st := l.Stats(); st.Open != 0 || st.Mode != "cut" {
		t.Fatalf("stats %+v", st)
	}
	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, l.Addr()))
	if st := l.Stats(); st.Accepted != 2 || st.Mode != "up" {
		t.Fatalf("stats %+v", st)
	}
}

// Blackhole forwards nothing and tells nobody; Restore closes what it held.
func TestBlackhole(t *testing.T) {
	l := listen(t, echoServer(t), time.Millisecond)
	c := dial(t, l.Addr())
	roundTrip(t, c)
	l.Blackhole()
	held := dial(t, l.Addr())
	for _, conn := range []net.Conn{c, held} {
		if _, err := conn.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		b := make([]byte, 1)
		if n, err := conn.Read(b); n != 0 || !isTimeout(err) {
			t.Fatalf("read through the black hole: %d bytes, %v; want a timeout", n, err)
		}
	}
	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}
	for _, conn := range []net.Conn{c, held} {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(conn); isTimeout(err) {
			t.Fatal("Restore did not close a connection held by the black hole")
		}
	}
	roundTrip(t, dial(t, l.Addr()))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Close ends every goroutine, with connections open in both directions.
func TestClose(t *testing.T) {
	l, err := Listen("127.0.0.1:0", echoServer(t), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, l.Addr())
	_, _ = c.Write(make([]byte, 100000)) // in flight, not yet due
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}
