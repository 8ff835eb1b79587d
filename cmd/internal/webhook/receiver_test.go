package webhook

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mode is how the test receiver answers.
type mode int32

const (
	modeOK          mode = iota
	mode5xx              // 503
	mode429              // 429 with Retry-After: 1
	modeHang             // no answer until the client gives up
	modeReset            // hijack and reset the connection (RST), no answer
	modeAcceptReset      // take the event, then close the connection without an answer: a duplicate follows
	modeFlaky            // each request at random: OK, or one of the above
	modeSlow             // answer 200 once released
	numModes
)

var modeNames = [numModes]string{"ok", "5xx", "429", "hang", "reset", "accept_reset", "flaky", "slow"}

// request is one POST the receiver got.
type request struct {
	seq      uint64
	subject  string
	attempt  int
	body     []byte
	sigOK    bool
	mode     mode // how it was answered
	accepted bool // the receiver took the event (2xx, or accept_reset)
}

// receiver is a real HTTP server on a loopback port that fails on purpose;
// it can go down and come back on the same port.
type receiver struct {
	t      testing.TB
	secret []byte
	mode   atomic.Int32
	flaky  float64 // modeFlaky's share of failures

	mu       sync.Mutex
	addr     string
	srv      *http.Server
	serveErr chan error
	log      []request
	byMode   [numModes]int
	inflight int
	maxIn    int
	release  chan struct{} // closed to let modeSlow answer
}

func newReceiver(t testing.TB, m mode) *receiver {
	r := &receiver{t: t, secret: testSecret, flaky: 0.3, release: make(chan struct{})}
	r.mode.Store(int32(m))
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *receiver) URL() string { return "http://" + r.addr + "/hook" }

func (r *receiver) setMode(m mode) { r.mode.Store(int32(m)) }

// up listens (again, on the same port once it has one) and serves.
func (r *receiver) up() {
	r.t.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port may linger for a moment
	}
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	r.mu.Lock()
	r.addr, r.srv, r.serveErr = ln.Addr().String(), srv, errc
	r.mu.Unlock()
}

// down closes the listener and every connection.
func (r *receiver) down() {
	r.mu.Lock()
	srv, errc := r.srv, r.serveErr
	r.srv = nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		r.t.Errorf("receiver: %v", err)
	}
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	seq, _ := strconv.ParseUint(req.Header.Get(HeaderEventID), 10, 64)
	attempt, _ := strconv.Atoi(req.Header.Get(HeaderAttempt))
	m := mode(r.mode.Load())
	if m == modeFlaky {
		m = modeOK
		if rand.Float64() < r.flaky {
			m = []mode{mode5xx, mode5xx, mode429, modeReset, modeReset, modeAcceptReset, modeAcceptReset, modeHang}[rand.N(8)]
		}
	}
	rq := request{
		seq: seq, subject: req.Header.Get(HeaderSubject), attempt: attempt, body: body, mode: m,
		sigOK:    Verify(r.secret, body, req.Header.Get(HeaderSignature)) && req.Header.Get("Content-Type") == "application/json",
		accepted: m == modeOK || m == modeAcceptReset || m == modeSlow,
	}
	r.mu.Lock()
	r.log = append(r.log, rq)
	r.byMode[m]++
	r.inflight++
	r.maxIn = max(r.maxIn, r.inflight)
	release := r.release
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()

	switch m {
	case modeOK:
		w.WriteHeader(http.StatusNoContent)
	case mode5xx:
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	case mode429:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case modeHang:
		<-req.Context().Done()
	case modeSlow:
		select {
		case <-release:
			w.WriteHeader(http.StatusOK)
		case <-req.Context().Done():
		}
	case modeReset, modeAcceptReset:
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			r.t.Errorf("hijack: %v", err)
			return
		}
		if tc, ok := c.(*net.TCPConn); ok && m == modeReset {
			_ = tc.SetLinger(0) // RST instead of FIN
		}
		_ = c.Close()
	}
}

// requests returns a copy of the log, in arrival order.
func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.log...)
}

func (r *receiver) count(m mode) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byMode[m]
}

func (r *receiver) inFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inflight
}

func (r *receiver) maxInFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxIn
}

// acceptedSet counts the accepted deliveries of each event.
func (r *receiver) acceptedSet() map[uint64]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[uint64]int, len(r.log))
	for _, q := range r.log {
		if q.accepted {
			m[q.seq]++
		}
	}
	return m
}

// releaseSlow lets the waiting modeSlow requests answer.
func (r *receiver) releaseSlow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.release)
	r.release = make(chan struct{})
}

func (r *receiver) modeCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int)
	for i, n := range r.byMode {
		if n > 0 {
			m[modeNames[i]] = n
		}
	}
	return m
}
