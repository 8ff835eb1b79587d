package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// relayResult is what relay mode measures.
type relayResult struct {
	PairsOK        int     `json:"pairs_ok"`
	LoginFailed    int     `json:"login_failures"`
	LoginRefused   int     `json:"login_refused"`
	CallerURLs     int     `json:"caller_urls"`
	CalleeURLs     int     `json:"callee_urls"`
	Paced          bool    `json:"paced"`
	WindowS        float64 `json:"window_s"`
	OffersSent     int64   `json:"offers_sent"`
	OffersInWindow int64   `json:"offers_in_window"`
	OffersPerS     float64 `json:"offers_per_s"`
	RoundTrips     int64   `json:"round_trips"`
	RoundTripsPerS float64 `json:"round_trips_per_s"`
	Delivered      int64   `json:"delivered_in_window"`
	MsgsPerS       float64 `json:"msgs_per_s"`
	RTT            Latency `json:"rtt"`
	SendLagMaxUS   float64 `json:"send_lag_max_us"`
	Lost           int64   `json:"lost"`
	Misrouted      int64   `json:"misrouted"`
	WrongUser      int64   `json:"misrouted_wrong_user"`
	WrongSender    int64   `json:"misrouted_wrong_sender"`
	BadSeq         int64   `json:"misrouted_bad_seq"`
	Corrupt        int64   `json:"misrouted_corrupt"`
	ErrorFrames    int64   `json:"error_frames"`
	NonJSON        int64   `json:"non_json_frames"`
	OtherFrames    int64   `json:"other_frames"`
	Disconnects    int64   `json:"disconnects"`
	CloseTimeouts  int64   `json:"close_timeouts"`
	FirstError     string  `json:"first_error,omitempty"`

	// CPU over the measured window: each -pids process's (seconds), their
	// sum per message delivered, and this tool's per message delivered.
	ServerCPU       map[string]float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerMsg float64            `json:"server_cpu_us_per_msg,omitempty"`
	ToolCPUPerMsg   float64            `json:"tool_cpu_us_per_msg"`
}

// procRef is a server process whose CPU time the tool reads (-pids).
type procRef struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// cpuSample is the CPU time of this tool and of each -pids process at one
// instant.
type cpuSample struct {
	tool  time.Duration
	procs []time.Duration // -1: could not be read
}

func sampleCPU(procs []procRef) cpuSample {
	s := cpuSample{tool: cpuTime(), procs: make([]time.Duration, len(procs))}
	for i, p := range procs {
		d, err := procCPU(p.PID)
		if err != nil {
			d = -1
		}
		s.procs[i] = d
	}
	return s
}

// cpuPerMsg fills the CPU figures of res from samples a and b taken at the
// start and end of the window in which res.Delivered messages arrived.
func (res *relayResult) cpuPerMsg(procs []procRef, a, b cpuSample) {
	if res.Delivered <= 0 {
		return
	}
	per := func(d time.Duration) float64 { return round1(float64(d.Nanoseconds()) / 1e3 / float64(res.Delivered)) }
	res.ToolCPUPerMsg = per(b.tool - a.tool)
	if len(procs) == 0 {
		return
	}
	res.ServerCPU = make(map[string]float64, len(procs))
	var sum time.Duration
	for i, p := range procs {
		if a.procs[i] < 0 || b.procs[i] < 0 {
			continue // gone meanwhile
		}
		d := b.procs[i] - a.procs[i]
		res.ServerCPU[p.Name] += round2(d.Seconds())
		sum += d
	}
	res.ServerCPUPerMsg = per(sum)
}

func (r *relayResult) clean() bool {
	return r.Lost == 0 && r.Misrouted == 0 && r.LoginFailed == 0 && r.LoginRefused == 0 &&
		r.Disconnects == 0 && r.ErrorFrames == 0
}

// relay is one run of relay mode.
type relay struct {
	cfg  *config
	ctx  context.Context
	base time.Time
	// Window of send times (ns since base) whose round trips are measured.
	winStart, winEnd int64
	paced            bool
	start            chan struct{}
	stopping         atomic.Bool // no new offers
	closing          atomic.Bool // connections are being closed on purpose

	wrongUser, wrongSender, badSeq, corrupt atomic.Int64
	errorFrames, nonJSON, other, disconn    atomic.Int64
	firstErr                                firstError
}

func (r *relay) now() int64 { return int64(time.Since(r.base)) }

// firstError keeps the first of many errors.
type firstError struct {
	mu  sync.Mutex
	msg string
}

func (f *firstError) set(format string, args ...any) {
	f.mu.Lock()
	if f.msg == "" {
		f.msg = fmt.Sprintf(format, args...)
	}
	f.mu.Unlock()
}

func (f *firstError) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}

// pair is a caller and its callee.
type pair struct {
	r                      *relay
	id                     int64
	caller, callee         *wsConn
	callerName, calleeName string

	offerPrefix  []byte // {"type":"offer","name":"<callee>","offer":{"p":<id>,"s":
	offerSuffix  []byte // padding and closing braces
	answerPrefix []byte // {"type":"answer","name":"<caller>","answer":
	obuf, abuf   []byte

	sent      atomic.Int64 // highest sequence number sent (offers are 1, 2, ...)
	answered  atomic.Int64 // valid answers received
	delivered atomic.Int64 // offers at the callee plus answers at the caller

	// Owned by the goroutine that sends offers (the caller's reader in a
	// closed loop, the pacer otherwise); read after it ended.
	inWindow int64
	lagMax   int64
	// Owned by the caller's reader; read after it ended.
	lastAns int64
	samples []int64
	// Owned by the callee's reader.
	lastOffer int64
}

func newPair(r *relay, id int) *pair {
	p := &pair{r: r, id: int64(id)}
	p.callerName = fmt.Sprintf("%s-c%d", r.cfg.Prefix, id)
	p.calleeName = fmt.Sprintf("%s-e%d", r.cfg.Prefix, id)
	p.offerPrefix = fmt.Appendf(nil, `{"type":"offer","name":%s,"offer":{"p":%d,"s":`, appendJSONString(nil, p.calleeName), id)
	if r.cfg.Pad > 0 {
		p.offerSuffix = append([]byte(`,"x":"`), strings.Repeat("x", r.cfg.Pad)...)
		p.offerSuffix = append(p.offerSuffix, `"}}`...)
	} else {
		p.offerSuffix = []byte(`}}`)
	}
	p.answerPrefix = fmt.Appendf(nil, `{"type":"answer","name":%s,"answer":`, appendJSONString(nil, p.callerName))
	return p
}

// sendOffer sends offer seq with send time ts.
func (p *pair) sendOffer(seq, ts int64) error {
	b := append(p.obuf[:0], p.offerPrefix...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, p.offerSuffix...)
	p.obuf = b
	if ts >= p.r.winStart && ts < p.r.winEnd {
		p.inWindow++
	}
	p.sent.Store(seq)
	return p.caller.writeText(b)
}

// readCommon classifies a frame that is not the one a reader waits for.
func (r *relay) readCommon(op ws.OpCode, ok bool, f *frame) {
	switch {
	case op != ws.OpText:
		r.other.Add(1)
	case !ok:
		r.nonJSON.Add(1)
	case string(f.typ) == "error":
		r.errorFrames.Add(1)
		r.firstErr.set("error frame: %s", f.message)
	default:
		r.other.Add(1)
	}
}

func (r *relay) ended(who string, err error) {
	if r.closing.Load() || r.ctx.Err() != nil {
		return
	}
	r.disconn.Add(1)
	r.firstErr.set("%s: connection ended: %v", who, err)
}

// callerLoop reads the caller's socket: answers come back here. In a
// closed loop it also sends the next offer.
func (p *pair) callerLoop() {
	r := p.r
	defer close(p.caller.done)
	<-r.start
	if !r.paced {
		if err := p.sendOffer(1, r.now()); err != nil {
			r.ended(p.callerName, err)
			return
		}
	}
	var f frame
	for {
		op, m, err := p.caller.readMessage()
		if err != nil {
			r.ended(p.callerName, err)
			return
		}
		ok := op == ws.OpText && parseFrame(m, &f)
		if !ok || string(f.typ) != "answer" {
			r.readCommon(op, ok, &f)
			continue
		}
		now := r.now()
		p.delivered.Add(1)
		id, seq, ts, valid := parsePayload(f.payload)
		switch {
		case !valid:
			r.corrupt.Add(1)
			r.firstErr.set("%s: unreadable answer payload %.80q", p.callerName, f.payload)
			continue
		case id != p.id:
			r.wrongUser.Add(1)
			r.firstErr.set("%s: answer for pair %d", p.callerName, id)
			continue
		case seq <= p.lastAns || seq > p.sent.Load():
			r.badSeq.Add(1)
			r.firstErr.set("%s: answer seq %d after %d (sent %d)", p.callerName, seq, p.lastAns, p.sent.Load())
			continue
		}
		p.lastAns = seq
		p.answered.Add(1)
		if ts >= r.winStart && ts < r.winEnd {
			p.samples = append(p.samples, now-ts)
		}
		if !r.paced && !r.stopping.Load() {
			if r.cfg.Think > 0 {
				time.Sleep(r.cfg.Think)
			}
			if err := p.sendOffer(seq+1, r.now()); err != nil {
				r.ended(p.callerName, err)
				return
			}
		}
	}
}

// calleeLoop reads the callee's socket and answers every offer with its
// own payload.
func (p *pair) calleeLoop() {
	r := p.r
	defer close(p.callee.done)
	var f frame
	for {
		op, m, err := p.callee.readMessage()
		if err != nil {
			r.ended(p.calleeName, err)
			return
		}
		ok := op == ws.OpText && parseFrame(m, &f)
		if !ok || string(f.typ) != "offer" {
			r.readCommon(op, ok, &f)
			continue
		}
		p.delivered.Add(1)
		if string(f.name) != p.callerName {
			r.wrongSender.Add(1)
			r.firstErr.set("%s: offer from %q, want %q", p.calleeName, f.name, p.callerName)
			continue
		}
		id, seq, _, valid := parsePayload(f.payload)
		switch {
		case !valid:
			r.corrupt.Add(1)
			r.firstErr.set("%s: unreadable offer payload %.80q", p.calleeName, f.payload)
			continue
		case id != p.id:
			r.wrongUser.Add(1)
			r.firstErr.set("%s: offer of pair %d", p.calleeName, id)
			continue
		case seq <= p.lastOffer:
			r.badSeq.Add(1)
			r.firstErr.set("%s: offer seq %d after %d", p.calleeName, seq, p.lastOffer)
			continue
		}
		p.lastOffer = seq
		b := append(p.abuf[:0], p.answerPrefix...)
		b = append(b, f.payload...)
		b = append(b, '}')
		p.abuf = b
		if err := p.callee.writeText(b); err != nil {
			r.ended(p.calleeName, err)
			return
		}
	}
}

// pace sends offers on a schedule: every P/rate seconds, the pairs
// staggered over the interval. The send time in the payload is the
// scheduled one.
func (p *pair) pace(interval float64, npairs int) {
	r := p.r
	<-r.start
	next := interval * float64(p.id-1) / float64(npairs)
	var seq int64
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for int64(next) < r.winEnd {
		ts := int64(next)
		if d := ts - r.now(); d > 0 {
			t.Reset(time.Duration(d))
			select {
			case <-t.C:
			case <-r.ctx.Done():
				return
			}
		}
		if r.ctx.Err() != nil {
			return
		}
		seq++
		if lag := r.now() - ts; lag > p.lagMax && ts >= r.winStart {
			p.lagMax = lag
		}
		if err := p.sendOffer(seq, ts); err != nil {
			r.ended(p.callerName, err)
			return
		}
		next += interval
	}
}

func runRelay(ctx context.Context, cfg *config, d *dialer, stderr io.Writer) (*relayResult, error) {
	r := &relay{cfg: cfg, ctx: ctx, paced: cfg.Rate > 0, start: make(chan struct{})}
	res := &relayResult{Paced: r.paced}
	callerURLs, calleeURLs := cfg.URLs, cfg.URLs
	if k := len(cfg.URLs); k > 1 {
		callerURLs, calleeURLs = cfg.URLs[:k/2], cfg.URLs[k/2:]
	}
	res.CallerURLs, res.CalleeURLs = len(callerURLs), len(calleeURLs)

	// Log everyone in, a bounded number at a time.
	pairs := make([]*pair, cfg.Pairs)
	for i := range pairs {
		pairs[i] = newPair(r, i+1)
	}
	type job struct {
		p      *pair
		callee bool
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 64)
		loginErr firstError
	)
	setupStart := time.Now()
	for i, p := range pairs {
		for _, callee := range []bool{false, true} {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				url, name, idx := callerURLs[i%len(callerURLs)], p.callerName, 2*i
				if callee {
					url, name, idx = calleeURLs[i%len(calleeURLs)], p.calleeName, 2*i+1
				}
				c, lr, err := d.connectLogin(ctx, url, name, idx, cfg.Timeout)
				mu.Lock()
				defer mu.Unlock()
				switch lr {
				case loginOK:
					if callee {
						p.callee = c
					} else {
						p.caller = c
					}
				case loginRefused:
					res.LoginRefused++
					loginErr.set("login %s at %s: refused (success:false)", name, url)
				default:
					res.LoginFailed++
					loginErr.set("login %s at %s: %v", name, url, err)
				}
			}()
		}
	}
	wg.Wait()
	var ok []*pair
	for _, p := range pairs {
		if p.caller != nil && p.callee != nil {
			ok = append(ok, p)
			continue
		}
		for _, c := range []*wsConn{p.caller, p.callee} {
			if c != nil {
				_ = c.nc.Close()
			}
		}
	}
	res.PairsOK = len(ok)
	r.firstErr.set("%s", loginErr.get())
	fmt.Fprintf(stderr, "relay: %d/%d pairs logged in in %s (callers on %d URL(s), callees on %d)\n",
		len(ok), cfg.Pairs, time.Since(setupStart).Round(time.Millisecond), len(callerURLs), len(calleeURLs))
	if len(ok) == 0 {
		res.FirstError = r.firstErr.get()
		return res, fmt.Errorf("no pair could log in: %s", res.FirstError)
	}
	// Closing every socket unblocks every reader if the run overstays.
	stopAfter := context.AfterFunc(ctx, func() {
		for _, p := range ok {
			_ = p.caller.nc.Close()
			_ = p.callee.nc.Close()
		}
	})
	defer stopAfter()

	var readers, pacers sync.WaitGroup
	for _, p := range ok {
		readers.Add(2)
		go func() { defer readers.Done(); p.callerLoop() }()
		go func() { defer readers.Done(); p.calleeLoop() }()
	}
	r.base = time.Now()
	r.winStart = int64(cfg.Warmup)
	r.winEnd = int64(cfg.Warmup + cfg.Duration)
	if r.paced {
		interval := float64(len(ok)) / cfg.Rate * 1e9
		for _, p := range ok {
			pacers.Add(1)
			go func() { defer pacers.Done(); p.pace(interval, len(ok)) }()
		}
	}
	close(r.start)
	mode := "closed loop"
	if cfg.Think > 0 {
		mode += fmt.Sprintf(", think %s", cfg.Think)
	}
	if r.paced {
		mode = fmt.Sprintf("paced at %g offers/s", cfg.Rate)
	}
	fmt.Fprintf(stderr, "relay: %s; warmup %s, measuring %s\n", mode, cfg.Warmup, cfg.Duration)

	sumDelivered := func() int64 {
		var n int64
		for _, p := range ok {
			n += p.delivered.Load()
		}
		return n
	}
	sleepUntil := func(t int64) {
		if dd := t - r.now(); dd > 0 {
			select {
			case <-time.After(time.Duration(dd)):
			case <-ctx.Done():
			}
		}
	}
	sleepUntil(r.winStart)
	d0, t0, cpu0 := sumDelivered(), r.now(), sampleCPU(cfg.PIDs)
	sleepUntil(r.winEnd)
	d1, t1, cpu1 := sumDelivered(), r.now(), sampleCPU(cfg.PIDs)
	r.stopping.Store(true)
	pacers.Wait()

	// Drain: wait for the answers still in flight.
	drainEnd := time.Now().Add(cfg.Drain)
	outstanding := func() int64 {
		var n int64
		for _, p := range ok {
			n += p.sent.Load() - p.answered.Load()
		}
		return n
	}
	for outstanding() > 0 && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	res.Lost = outstanding()

	// Close everything: close handshakes, a bounded number at a time.
	r.closing.Store(true)
	var closeTimeouts atomic.Int64
	var cwg sync.WaitGroup
	csem := make(chan struct{}, 64)
	for _, p := range ok {
		for _, c := range []*wsConn{p.caller, p.callee} {
			cwg.Add(1)
			csem <- struct{}{}
			go func() {
				defer func() { <-csem; cwg.Done() }()
				if !c.closeWait(cfg.Timeout) {
					closeTimeouts.Add(1)
				}
			}()
		}
	}
	cwg.Wait()
	readers.Wait()

	window := time.Duration(t1 - t0)
	res.WindowS = round2(window.Seconds())
	var all []int64
	for _, p := range ok {
		res.OffersSent += p.sent.Load()
		res.OffersInWindow += p.inWindow
		res.SendLagMaxUS = max(res.SendLagMaxUS, round1(float64(p.lagMax)/1e3))
		all = append(all, p.samples...)
	}
	res.RoundTrips = int64(len(all))
	res.RTT = summarize(all)
	if window > 0 {
		res.Delivered = d1 - d0
		res.MsgsPerS = round1(float64(res.Delivered) / window.Seconds())
		res.OffersPerS = round1(float64(res.OffersInWindow) / cfg.Duration.Seconds())
		res.RoundTripsPerS = round1(float64(res.RoundTrips) / cfg.Duration.Seconds())
		res.cpuPerMsg(cfg.PIDs, cpu0, cpu1)
	}
	res.WrongUser, res.WrongSender = r.wrongUser.Load(), r.wrongSender.Load()
	res.BadSeq, res.Corrupt = r.badSeq.Load(), r.corrupt.Load()
	res.Misrouted = res.WrongUser + res.WrongSender + res.BadSeq + res.Corrupt
	res.ErrorFrames, res.NonJSON, res.OtherFrames = r.errorFrames.Load(), r.nonJSON.Load(), r.other.Load()
	res.Disconnects = r.disconn.Load()
	res.CloseTimeouts = closeTimeouts.Load()
	res.FirstError = r.firstErr.get()

	fmt.Fprintf(stderr, "relay: %d pairs, %s, window %.2fs\n", res.PairsOK, mode, window.Seconds())
	fmt.Fprintf(stderr, "  delivered   %.0f msgs/s (offers+answers; %d in window)\n", res.MsgsPerS, res.Delivered)
	fmt.Fprintf(stderr, "  round trips %.0f/s; offers sent %.0f/s in window, %d in all\n", res.RoundTripsPerS, res.OffersPerS, res.OffersSent)
	fmt.Fprintf(stderr, "  round trip  %s\n", res.RTT)
	if r.paced {
		fmt.Fprintf(stderr, "  send lag    max %s (how late the pacer sent against its schedule)\n", fmtUS(res.SendLagMaxUS))
	}
	if res.ServerCPU != nil {
		fmt.Fprintf(stderr, "  CPU         server %.1f µs per message delivered (%v s), this tool %.1f µs\n", res.ServerCPUPerMsg, res.ServerCPU, res.ToolCPUPerMsg)
	} else {
		fmt.Fprintf(stderr, "  CPU         this tool %.1f µs per message delivered\n", res.ToolCPUPerMsg)
	}
	fmt.Fprintf(stderr, "  lost %d  misrouted %d (wrong user %d, wrong sender %d, bad seq %d, corrupt %d)\n",
		res.Lost, res.Misrouted, res.WrongUser, res.WrongSender, res.BadSeq, res.Corrupt)
	fmt.Fprintf(stderr, "  login failures %d, refused %d; error frames %d, non-JSON %d, other %d; disconnects %d; close timeouts %d\n",
		res.LoginFailed, res.LoginRefused, res.ErrorFrames, res.NonJSON, res.OtherFrames, res.Disconnects, res.CloseTimeouts)
	if res.FirstError != "" {
		fmt.Fprintf(stderr, "  first error: %s\n", res.FirstError)
	}
	return res, nil
}
