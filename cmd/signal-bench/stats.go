package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Latency summarizes a set of durations, in microseconds. Percentiles are
// exact, by nearest rank over every sample: pN is the smallest sample such
// that at least N% of the samples are less than or equal to it.
type Latency struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// summarize sorts samples (nanoseconds) in place and summarizes them.
func summarize(samples []int64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	us := func(ns int64) float64 { return round1(float64(ns) / 1e3) }
	return Latency{
		Count: len(samples),
		Min:   us(samples[0]),
		Mean:  round1(sum / float64(len(samples)) / 1e3),
		P50:   us(percentile(samples, 50)),
		P90:   us(percentile(samples, 90)),
		P99:   us(percentile(samples, 99)),
		P999:  us(percentile(samples, 99.9)),
		Max:   us(samples[len(samples)-1]),
	}
}

// percentile returns the nearest-rank percentile p of sorted samples.
func percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Rank in 1..n; the small epsilon keeps p*n/100 that is an exact
	// integer from rounding up through floating-point error.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

func round2(x float64) float64 { return math.Round(x*100) / 100 }

func (l Latency) String() string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, n=%d)",
		fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.Max), fmtUS(l.Mean), l.Count)
}

func fmtUS(us float64) string {
	return time.Duration(us * 1e3).Round(time.Microsecond).String()
}
