package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// connsResult is what conns mode measures.
type connsResult struct {
	Attempted     int     `json:"attempted"`
	OK            int     `json:"ok"`
	Failed        int     `json:"failed"`
	Refused       int     `json:"refused"`
	RampS         float64 `json:"ramp_s"`
	RatePerS      float64 `json:"connect_login_per_s"`
	ConnectLogin  Latency `json:"connect_login"`
	HeldS         float64 `json:"held_s"`
	Dropped       int64   `json:"dropped"`
	CloseS        float64 `json:"close_s"`
	CloseTimeouts int64   `json:"close_timeouts"`
	FirstError    string  `json:"first_error,omitempty"`
}

func (r *connsResult) clean() bool {
	return r.Failed == 0 && r.Refused == 0 && r.Dropped == 0 && r.OK == r.Attempted
}

func runConns(ctx context.Context, cfg *config, d *dialer, stderr io.Writer) (*connsResult, error) {
	res := &connsResult{Attempted: cfg.N}
	d.readBuf = 256 // idle sockets: keep this process small
	conns := make([]*wsConn, cfg.N)
	lat := make([]int64, cfg.N)
	var (
		next, okN, failed, refused atomic.Int64
		dropped                    atomic.Int64
		closing                    atomic.Bool
		firstErr                   firstError
		wg, readers                sync.WaitGroup
	)
	var mu sync.Mutex // guards conns against the AfterFunc
	stopAfter := context.AfterFunc(ctx, func() {
		// Overstayed: unblock every reader.
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			if c != nil {
				_ = c.nc.Close()
			}
		}
	})
	defer stopAfter()
	reader := func(c *wsConn) {
		defer readers.Done()
		defer close(c.done)
		for {
			if _, _, err := c.readMessage(); err != nil {
				if !closing.Load() && ctx.Err() == nil {
					dropped.Add(1)
					firstErr.set("connection dropped while holding: %v", err)
				}
				return
			}
		}
	}
	start := time.Now()
	progress := time.NewTicker(2 * time.Second)
	defer progress.Stop()
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-progress.C:
				fmt.Fprintf(stderr, "conns: %d/%d up after %s\n", okN.Load(), cfg.N, time.Since(start).Round(time.Millisecond))
			case <-done:
				return
			}
		}
	}()
	for range min(cfg.C, cfg.N) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= cfg.N {
					return
				}
				url := cfg.URLs[i%len(cfg.URLs)]
				t := time.Now()
				c, lr, err := d.connectLogin(ctx, url, fmt.Sprintf("%s-n%d", cfg.Prefix, i+1), i, cfg.Timeout)
				lat[i] = int64(time.Since(t))
				switch lr {
				case loginOK:
					okN.Add(1)
					mu.Lock()
					conns[i] = c
					mu.Unlock()
					readers.Add(1)
					go reader(c)
				case loginRefused:
					refused.Add(1)
					firstErr.set("login refused (success:false)")
				default:
					failed.Add(1)
					firstErr.set("%v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	<-exited
	ramp := time.Since(start)
	res.OK, res.Failed, res.Refused = int(okN.Load()), int(failed.Load()), int(refused.Load())
	res.RampS = round2(ramp.Seconds())
	res.RatePerS = round1(float64(res.OK) / ramp.Seconds())
	var samples []int64
	// No lock from here on: the workers that write conns have ended.
	for i, c := range conns {
		if c != nil {
			samples = append(samples, lat[i])
		}
	}
	res.ConnectLogin = summarize(samples)
	fmt.Fprintf(stderr, "conns: %d up, %d failed, %d refused in %s: %.0f connect+login/s; connect+login %s\n",
		res.OK, res.Failed, res.Refused, ramp.Round(time.Millisecond), res.RatePerS, res.ConnectLogin)

	if ctx.Err() == nil {
		if cfg.Ready != "" {
			if err := os.WriteFile(cfg.Ready, fmt.Appendf(nil, "%d\n", res.OK), 0o644); err != nil {
				fmt.Fprintln(stderr, "conns: ready file:", err)
			}
			defer os.Remove(cfg.Ready)
		}
		fmt.Fprintf(stderr, "conns: holding %d connections for %s\n", res.OK, cfg.Hold)
		hs := time.Now()
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
		res.HeldS = round2(time.Since(hs).Seconds())
	}
	res.Dropped = dropped.Load()

	closing.Store(true)
	cs := time.Now()
	var closeTimeouts atomic.Int64
	var cwg sync.WaitGroup
	sem := make(chan struct{}, cfg.C)
	for _, c := range conns {
		if c == nil {
			continue
		}
		cwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; cwg.Done() }()
			if !c.closeWait(cfg.Timeout) {
				closeTimeouts.Add(1)
			}
		}()
	}
	cwg.Wait()
	readers.Wait()
	res.CloseS = round2(time.Since(cs).Seconds())
	res.CloseTimeouts = closeTimeouts.Load()
	res.FirstError = firstErr.get()
	fmt.Fprintf(stderr, "conns: dropped while holding %d; closed in %s (%d close timeouts)\n",
		res.Dropped, time.Since(cs).Round(time.Millisecond), res.CloseTimeouts)
	if res.FirstError != "" {
		fmt.Fprintf(stderr, "  first error: %s\n", res.FirstError)
	}
	return res, nil
}
