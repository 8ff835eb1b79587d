// Command signal-bench is a load generator for any WebSocket signaling
// server that speaks the classic tutorial protocol ({"type":"login"},
// "offer", "answer" as JSON text frames): this project's edges as well as
// the tutorial's Node server.
//
//	signal-bench relay  -url ws://127.0.0.1:9090/,ws://127.0.0.1:9091/ -pairs 20
//	signal-bench relay  -url ws://127.0.0.1:9090/ -rate 2000
//	signal-bench conns  -url ws://127.0.0.1:9090/ -n 19000 -hold 30s
//	signal-bench logins -url ws://127.0.0.1:9090/ -c 32 -duration 10s
//
// It prints a human-readable summary on stderr and one JSON line with every
// figure on stdout. It only talks to loopback addresses, and every run is
// bounded in time (-max-time) even if the server hangs.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

func main() {
	code := run(os.Args[1:], os.Stdout, os.Stderr, true)
	os.Exit(code)
}

// durationValue is a duration flag that also takes a plain number of
// seconds ("30" is "30s").
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		*d = durationValue(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration (10s, 500ms) or a number of seconds")
	}
	*d = durationValue(v)
	return nil
}

func durVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationValue)(p), name, usage)
}

// config is every flag.
type config struct {
	Mode     string        `json:"mode"`
	URLs     []string      `json:"urls"`
	Pairs    int           `json:"pairs,omitempty"`
	Rate     float64       `json:"rate,omitempty"`
	Duration time.Duration `json:"-"`
	Warmup   time.Duration `json:"-"`
	Drain    time.Duration `json:"-"`
	Pad      int           `json:"pad,omitempty"`
	Think    time.Duration `json:"-"`
	N        int           `json:"n,omitempty"`
	Hold     time.Duration `json:"-"`
	C        int           `json:"concurrency,omitempty"`
	Sources  int           `json:"sources"`
	Timeout  time.Duration `json:"-"`
	MaxTime  time.Duration `json:"-"`
	Ready    string        `json:"-"`
	Prefix   string        `json:"prefix"`
	Profile  string        `json:"-"`
	PIDs     []procRef     `json:"pids,omitempty"`

	DurationS float64 `json:"duration_s,omitempty"`
	WarmupS   float64 `json:"warmup_s,omitempty"`
	DrainS    float64 `json:"drain_s,omitempty"`
	ThinkS    float64 `json:"think_s,omitempty"`
	HoldS     float64 `json:"hold_s,omitempty"`
	TimeoutS  float64 `json:"timeout_s"`
	MaxTimeS  float64 `json:"max_time_s"`

	sourceIPs []net.IP
}

const usageHead = `Usage: signal-bench MODE [flags]     (or: signal-bench -mode MODE [flags])

Load generator for WebSocket signaling servers that speak the tutorial
protocol: {"type":"login","name":N}, {"type":"offer","name":T,"offer":X},
{"type":"answer","name":T,"answer":X}. Loopback servers only.

Modes:
  relay   P pairs (-pairs) log in; callers on the first half of the -url list,
          callees on the rest (all on one URL if only one is given), spread
          round-robin. Each caller sends offers whose payload carries its pair,
          a sequence number and a send time; the callee answers each offer
          with the same payload; the caller measures the round trip. Closed
          loop (one offer in flight per pair, -think between an answer and
          the next offer) unless -rate sets a total offer
          rate spread over the pairs (then the send time is the scheduled
          one, so that a late sender counts against latency). Runs -warmup,
          then measures for -duration, then waits up to -drain for answers.
          Reports round trips p50/p90/p99/p99.9/max, offers+answers delivered
          per second, lost (offers never answered) and misrouted (a message at
          the wrong user, from the wrong sender, or with a wrong sequence).
  conns   opens -n connections (-c at a time), logs each in with a unique
          name, holds them idle for -hold (an outside observer measures the
          server's memory; see -ready-file), then closes them. Reports the
          connect+login rate while ramping, failures, drops while holding.
  logins  -c workers repeat connect, login (unique name), close for
          -duration. Reports cycles/s, failures and success:false replies.

Summary on stderr; one JSON line with every figure on stdout (latencies in
microseconds). Exit status 0 on a clean run, 1 when the run saw failures
(lost, misrouted, refused or failed logins, drops), 2 on bad usage or an
aborted run.

Flags (durations take 10s, 500ms, or a plain number of seconds):
`

func newFlagSet(cfg *config, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("signal-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Mode, "mode", "relay", "relay, conns or logins (or give it as the first argument)")
	fs.Func("url", "comma-separated ws:// URLs of the server's edges, loopback only", func(s string) error {
		cfg.URLs = nil
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				cfg.URLs = append(cfg.URLs, u)
			}
		}
		return nil
	})
	fs.IntVar(&cfg.Pairs, "pairs", 20, "relay: caller/callee pairs")
	fs.Float64Var(&cfg.Rate, "rate", 0, "relay: total offers per second over all pairs; 0 is closed loop (next offer when the answer is back)")
	durVar(fs, &cfg.Duration, "duration", 10*time.Second, "relay: measured time after warmup; logins: storm time")
	durVar(fs, &cfg.Warmup, "warmup", time.Second, "relay: time before measuring")
	durVar(fs, &cfg.Drain, "drain", 2*time.Second, "relay: after measuring, how long to wait for outstanding answers before counting them lost")
	durVar(fs, &cfg.Think, "think", 0, "relay, closed loop: pause between an answer and the next offer (keeps each connection under a server's per-connection rate limit)")
	fs.IntVar(&cfg.Pad, "pad", 0, "relay: extra bytes in every offer and answer payload (an SDP is 2-5 KB)")
	fs.IntVar(&cfg.N, "n", 1000, "conns: connections to open and log in")
	durVar(fs, &cfg.Hold, "hold", 10*time.Second, "conns: how long to hold the connections open once all are up")
	fs.IntVar(&cfg.C, "c", 32, "conns: connections being set up (and closed) at once; logins: concurrent workers")
	fs.IntVar(&cfg.Sources, "sources", -1, "source addresses 127.0.0.2 .. 127.0.0.(K+1) to spread connections over (each has ~28k ephemeral ports, and connect() slows down as one source's ports fill up); 0: let the kernel choose; -1: auto (conns: one per 5000 connections, logins: 4, relay: 0)")
	durVar(fs, &cfg.Timeout, "timeout", 5*time.Second, "bound on each dial, login reply and close handshake")
	durVar(fs, &cfg.MaxTime, "max-time", 0, "hard bound on the whole run; 0: auto (the mode's planned time plus 60s)")
	fs.StringVar(&cfg.Ready, "ready-file", "", "conns: file to write once every connection is up and the hold begins (removed at exit)")
	fs.StringVar(&cfg.Prefix, "prefix", "", "user name prefix; names are PREFIX-c1, PREFIX-e1, PREFIX-n1, PREFIX-l1, ... (random by default, so that runs do not collide)")
	fs.StringVar(&cfg.Profile, "cpuprofile", "", "write a CPU profile of this tool to the file")
	fs.Func("pids", "relay: the server's processes, NAME:PID,... (or PID,...): their CPU time (utime+stime from /proc/PID/stat) over the measured window, per message delivered, beside this tool's own", func(s string) error {
		cfg.PIDs = nil
		for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
			name, id, ok := strings.Cut(f, ":")
			if !ok {
				name, id = "pid"+f, f
			}
			pid, err := strconv.Atoi(id)
			if err != nil || pid <= 0 || name == "" {
				return fmt.Errorf("%q: want NAME:PID", f)
			}
			cfg.PIDs = append(cfg.PIDs, procRef{Name: name, PID: pid})
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			if _, ok := f.Value.(*durationValue); ok {
				name = "duration"
			} else if f.Name == "url" {
				name = "urls"
			}
			line := "  -" + f.Name
			if name != "" {
				line += " " + name
			}
			def := f.DefValue
			switch f.Name {
			case "url":
				def = "ws://127.0.0.1:9090/"
			case "prefix":
				def = "sb<random>"
			case "pids":
				def = "none"
			}
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(fs.Output(), "%s\n    \t%s (default %s)\n", line, usage, def)
		})
	}
	return fs
}

// parseArgs parses the command line into cfg.
func parseArgs(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{URLs: []string{"ws://127.0.0.1:9090/"}}
	fs := newFlagSet(cfg, stderr)
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cfg.Mode = args[0] // -mode may still override it
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch cfg.Mode {
	case "relay", "conns", "logins":
	default:
		return nil, fmt.Errorf("unknown mode %q: want relay, conns or logins", cfg.Mode)
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("-url: no URL")
	}
	for i, u := range cfg.URLs {
		n, err := checkURL(u)
		if err != nil {
			return nil, err
		}
		cfg.URLs[i] = n
	}
	switch {
	case cfg.Pairs < 1:
		return nil, errors.New("-pairs must be at least 1")
	case cfg.Rate < 0:
		return nil, errors.New("-rate must not be negative")
	case cfg.N < 1:
		return nil, errors.New("-n must be at least 1")
	case cfg.C < 1:
		return nil, errors.New("-c must be at least 1")
	case cfg.Duration <= 0:
		return nil, errors.New("-duration must be positive")
	case cfg.Warmup < 0 || cfg.Drain < 0 || cfg.Hold < 0 || cfg.Think < 0:
		return nil, errors.New("-warmup, -drain, -hold and -think must not be negative")
	case cfg.Timeout <= 0:
		return nil, errors.New("-timeout must be positive")
	case cfg.Pad < 0 || cfg.Pad > maxMessage/2:
		return nil, fmt.Errorf("-pad must be within 0..%d", maxMessage/2)
	case cfg.Sources > 250:
		return nil, errors.New("-sources: at most 250")
	}
	if cfg.Sources < 0 {
		switch cfg.Mode {
		case "conns":
			// The kernel's search for a free port in connect() grows
			// costly as a source's range fills: 19000 connections from
			// one address cost this tool 3x the CPU of four addresses.
			cfg.Sources = (cfg.N + 4999) / 5000
		case "logins":
			cfg.Sources = 4
		default:
			cfg.Sources = 0
		}
	}
	for i := range cfg.Sources {
		cfg.sourceIPs = append(cfg.sourceIPs, net.IPv4(127, 0, 0, byte(2+i)).To4())
	}
	if cfg.Prefix == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		cfg.Prefix = "sb" + hex.EncodeToString(b)
	}
	for _, c := range cfg.Prefix {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return nil, errors.New("-prefix: use only [A-Za-z0-9_-]")
		}
	}
	if cfg.MaxTime == 0 {
		planned := cfg.Timeout
		switch cfg.Mode {
		case "relay":
			planned += cfg.Warmup + cfg.Duration + cfg.Drain + cfg.Timeout
		case "conns":
			// The ramp: allow a slow server 2 ms per connection.
			planned += cfg.Hold + time.Duration(cfg.N)*2*time.Millisecond + cfg.Timeout
		case "logins":
			planned += cfg.Duration + cfg.Timeout
		}
		cfg.MaxTime = planned + 60*time.Second
	}
	cfg.DurationS, cfg.TimeoutS, cfg.MaxTimeS = cfg.Duration.Seconds(), cfg.Timeout.Seconds(), cfg.MaxTime.Seconds()
	switch cfg.Mode {
	case "relay":
		cfg.WarmupS, cfg.DrainS, cfg.ThinkS = cfg.Warmup.Seconds(), cfg.Drain.Seconds(), cfg.Think.Seconds()
		cfg.N, cfg.C = 0, 0
		for _, p := range cfg.PIDs {
			if _, err := procCPU(p.PID); err != nil {
				return nil, fmt.Errorf("-pids %s:%d: %v", p.Name, p.PID, err)
			}
		}
	case "conns":
		cfg.HoldS, cfg.DurationS = cfg.Hold.Seconds(), 0
		cfg.Pairs, cfg.Rate, cfg.Pad = 0, 0, 0
	case "logins":
		cfg.Pairs, cfg.Rate, cfg.Pad, cfg.N = 0, 0, 0, 0
	}
	return cfg, nil
}

// checkURL accepts ws:// URLs whose host is a loopback address or
// localhost, and returns it with localhost replaced by 127.0.0.1 (so that
// IPv4 source addresses work) and a path of "/" if it had none.
func checkURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-url %q: %v", raw, err)
	}
	if u.Scheme != "ws" {
		return "", fmt.Errorf("-url %q: only ws:// URLs", raw)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	} else if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("-url %q: refusing a host that is not a loopback address or localhost", raw)
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	u.Host = net.JoinHostPort(host, port)
	if u.Path == "" {
		u.Path = "/"
	}
	return u.String(), nil
}

// result is the JSON line: the parameters and the mode's figures.
type result struct {
	Mode   string  `json:"mode"`
	Params *config `json:"params"`
	Relay  *relayResult
	Conns  *connsResult
	Logins *loginsResult
	// Error is set when the run could not complete (setup failed, hard
	// deadline).
	Error  string  `json:"error,omitempty"`
	Clean  bool    `json:"clean"`
	TotalS float64 `json:"total_s"`
	// ToolCPU is the CPU time this tool used (user+system), to tell whether
	// it, rather than the server, was the bottleneck.
	ToolCPU    float64 `json:"tool_cpu_s"`
	ToolCPUPct float64 `json:"tool_cpu_pct"`
	NoFile     uint64  `json:"nofile_limit"`
	Version    string  `json:"go"`
}

// MarshalJSON flattens the mode's figures into the top level.
func (r *result) MarshalJSON() ([]byte, error) {
	type base result
	b, err := json.Marshal((*base)(r))
	if err != nil {
		return nil, err
	}
	var mode any
	switch {
	case r.Relay != nil:
		mode = r.Relay
	case r.Conns != nil:
		mode = r.Conns
	case r.Logins != nil:
		mode = r.Logins
	default:
		return b, nil
	}
	m, err := json.Marshal(mode)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	delete(top, "Relay")
	delete(top, "Conns")
	delete(top, "Logins")
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(m, &fields); err != nil {
		return nil, err
	}
	for k, v := range fields {
		top[k] = v
	}
	return json.Marshal(top)
}

// run is the whole program; main passes the process's streams. hardExit
// arms a watchdog that ends the process if the run overstays -max-time by
// 10 s despite every deadline (tests pass false).
func run(args []string, stdout, stderr io.Writer, hardExit bool) int {
	cfg, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "signal-bench:", err)
		return 2
	}
	res := &result{Mode: cfg.Mode, Params: cfg, Version: runtime.Version()}
	res.NoFile, err = raiseNoFile()
	if err != nil {
		fmt.Fprintln(stderr, "signal-bench: raising RLIMIT_NOFILE:", err)
	}
	if cfg.Profile != "" {
		f, err := os.Create(cfg.Profile)
		if err != nil {
			fmt.Fprintln(stderr, "signal-bench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "signal-bench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.MaxTime)
	defer cancel()
	if hardExit {
		t := time.AfterFunc(cfg.MaxTime+10*time.Second, func() {
			fmt.Fprintln(stderr, "signal-bench: hard deadline passed; exiting")
			fmt.Fprintf(stdout, `{"mode":%q,"error":"hard deadline passed","clean":false}`+"\n", cfg.Mode)
			os.Exit(2)
		})
		defer t.Stop()
	}
	start, cpu0 := time.Now(), cpuTime()
	d := &dialer{timeout: cfg.Timeout, sources: cfg.sourceIPs}
	fmt.Fprintf(stderr, "signal-bench %s: %s; sources %d; names %s-*; max time %s\n",
		cfg.Mode, strings.Join(cfg.URLs, " "), cfg.Sources, cfg.Prefix, cfg.MaxTime)
	switch cfg.Mode {
	case "relay":
		res.Relay, err = runRelay(ctx, cfg, d, stderr)
	case "conns":
		res.Conns, err = runConns(ctx, cfg, d, stderr)
	case "logins":
		res.Logins, err = runLogins(ctx, cfg, d, stderr)
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("run cut short by -max-time (%s)", cfg.MaxTime)
	}
	res.TotalS = round2(time.Since(start).Seconds())
	cpu := cpuTime() - cpu0
	res.ToolCPU = round2(cpu.Seconds())
	res.ToolCPUPct = round1(100 * cpu.Seconds() / time.Since(start).Seconds())
	fmt.Fprintf(stderr, "signal-bench: %.2fs, this tool used %.2fs CPU (%.0f%% of one core)\n", res.TotalS, res.ToolCPU, res.ToolCPUPct)
	code := 0
	switch {
	case err != nil:
		res.Error = err.Error()
		fmt.Fprintln(stderr, "signal-bench: ERROR:", err)
		code = 2
	case res.Relay != nil:
		res.Clean = res.Relay.clean()
	case res.Conns != nil:
		res.Clean = res.Conns.clean()
	case res.Logins != nil:
		res.Clean = res.Logins.clean()
	}
	if code == 0 && !res.Clean {
		code = 1
	}
	b, jerr := json.Marshal(res)
	if jerr != nil {
		fmt.Fprintln(stderr, "signal-bench:", jerr)
		return 2
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return code
}
