package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// loginsResult is what logins mode measures.
type loginsResult struct {
	Cycles        int64   `json:"cycles"`
	CyclesPerS    float64 `json:"cycles_per_s"`
	ElapsedS      float64 `json:"elapsed_s"`
	Failures      int64   `json:"failures"`
	Refused       int64   `json:"refused"`
	CloseTimeouts int64   `json:"close_timeouts"`
	ConnectLogin  Latency `json:"connect_login"`
	Cycle         Latency `json:"cycle"`
	FirstError    string  `json:"first_error,omitempty"`
}

func (r *loginsResult) clean() bool { return r.Failures == 0 && r.Refused == 0 }

// runLogins runs -c workers that each connect, log in with a new name and
// close (with a close handshake), again and again for -duration.
func runLogins(ctx context.Context, cfg *config, d *dialer, stderr io.Writer) (*loginsResult, error) {
	res := &loginsResult{}
	d.readBuf = 512
	var (
		seq, cycles, failures, refused, closeTO atomic.Int64
		firstErr                                firstError
		wg                                      sync.WaitGroup
	)
	type samples struct{ login, cycle []int64 }
	per := make([]samples, cfg.C)
	start := time.Now()
	end := start.Add(cfg.Duration)
	for w := range cfg.C {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := cfg.URLs[w%len(cfg.URLs)]
			s := &per[w]
			for ctx.Err() == nil && time.Now().Before(end) {
				i := int(seq.Add(1))
				t := time.Now()
				c, lr, err := d.connectLogin(ctx, url, fmt.Sprintf("%s-l%d", cfg.Prefix, i), i, cfg.Timeout)
				tl := time.Since(t)
				switch lr {
				case loginOK:
				case loginRefused:
					refused.Add(1)
					firstErr.set("login refused (success:false)")
					continue
				default:
					failures.Add(1)
					firstErr.set("%v", err)
					continue
				}
				if !c.closeInline(cfg.Timeout) {
					closeTO.Add(1)
				}
				cycles.Add(1)
				s.login = append(s.login, int64(tl))
				s.cycle = append(s.cycle, int64(time.Since(t)))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var login, cycle []int64
	for _, s := range per {
		login = append(login, s.login...)
		cycle = append(cycle, s.cycle...)
	}
	res.Cycles, res.Failures, res.Refused, res.CloseTimeouts = cycles.Load(), failures.Load(), refused.Load(), closeTO.Load()
	res.ElapsedS = round2(elapsed.Seconds())
	res.CyclesPerS = round1(float64(res.Cycles) / elapsed.Seconds())
	res.ConnectLogin = summarize(login)
	res.Cycle = summarize(cycle)
	res.FirstError = firstErr.get()
	fmt.Fprintf(stderr, "logins: %d workers, %d cycles in %s: %.0f cycles/s; %d failures, %d refused (success:false), %d close timeouts\n",
		cfg.C, res.Cycles, elapsed.Round(time.Millisecond), res.CyclesPerS, res.Failures, res.Refused, res.CloseTimeouts)
	fmt.Fprintf(stderr, "  connect+login %s\n  whole cycle   %s\n", res.ConnectLogin, res.Cycle)
	if res.FirstError != "" {
		fmt.Fprintf(stderr, "  first error: %s\n", res.FirstError)
	}
	return res, nil
}
