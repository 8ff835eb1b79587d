package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a POST.
const (
	HeaderSignature = "Signal-Signature"
	HeaderEventID   = "Signal-Event-Id"
	HeaderSubject   = "Signal-Event-Subject"
	HeaderAttempt   = "Signal-Delivery-Attempt"
)

// SignaturePrefix starts the Signal-Signature header; hex of the HMAC
// follows.
const SignaturePrefix = "sha256="

// Sign returns the Signal-Signature of body: "sha256=" and the hex of
// HMAC-SHA256 keyed with secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return SignaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether sig is body's Signal-Signature under secret, in
// constant time.
func Verify(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, body)))
}

// ackTimeout bounds one confirmed ack.
const ackTimeout = 5 * time.Second

// maxDrain is how much of a response body is read so that the connection
// can be reused; a longer one costs the connection.
const maxDrain = 64 << 10

// outcome is what one attempt got.
type outcome struct {
	ok         bool
	status     int           // 0 without a response
	reason     reason        // for a failure
	retryAfter time.Duration // asked by the receiver
	err        error
}

// deliver POSTs j until a 2xx and acks it; it returns false only when
// stopping made it give up (the message then stays unacked, to be NAKed).
func (w *Webhook) deliver(j job) bool {
	e := j.e
	sig := Sign(w.cfg.Secret, e.data)
	for attempt := 1; ; attempt++ {
		if attempt > 1 && w.stopping() {
			return false
		}
		o := w.post(e, sig, attempt)
		if o.ok {
			if !w.ack(j) {
				return false
			}
			w.stats.delivered.Add(1)
			w.stats.delivery.Observe(time.Since(e.stored).Seconds())
			if w.warned.Swap(false) {
				w.log.Info("webhook receiver answers 2xx again", "url", w.url)
			}
			return true
		}
		w.stats.failed[o.reason].Add(1)
		w.logFailure(e, attempt, o)
		t := time.NewTimer(backoff(attempt, w.cfg.MinBackoff, w.cfg.MaxBackoff, o.retryAfter))
		select {
		case <-t.C:
		case <-w.stopc:
			t.Stop()
			return false
		}
	}
}

// post makes one attempt.
func (w *Webhook) post(e *entry, sig string, attempt int) outcome {
	ctx, cancel := context.WithTimeout(w.hard, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(e.data))
	if err != nil {
		return outcome{reason: reasonOther, err: err}
	}
	h := req.Header
	h["Content-Type"] = []string{"application/json"}
	h["User-Agent"] = []string{"signal-webhook"}
	h[HeaderSignature] = []string{sig}
	h[HeaderEventID] = []string{strconv.FormatUint(e.seq, 10)}
	h[HeaderSubject] = []string{e.subject}
	h[HeaderAttempt] = []string{strconv.Itoa(attempt)}
	w.stats.attempts.Add(1)
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		w.stats.post.Observe(time.Since(start).Seconds())
		return outcome{reason: classify(ctx, err), err: err}
	}
	// The status is the receiver's answer: a body cut short after a 2xx
	// does not undo it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
	w.stats.post.Observe(time.Since(start).Seconds())
	o := outcome{status: resp.StatusCode}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		o.ok = true
	case c == http.StatusTooManyRequests:
		o.reason = reason429
	case c >= 500:
		o.reason = reason5xx
	case c >= 400:
		o.reason = reason4xx
	default:
		o.reason = reason3xx
	}
	if !o.ok {
		o.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
	}
	return o
}

// classify names why a request got no response.
func classify(ctx context.Context, err error) reason {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	case errors.Is(err, context.Canceled):
		return reasonCanceled
	case errors.Is(err, syscall.ECONNREFUSED):
		return reasonRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return reasonReset
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return reasonDNS
	}
	return reasonOther
}

// retryAfter parses a Retry-After header: seconds or an HTTP date; zero
// when absent or malformed.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

// backoff is the wait after the attempt-th failed attempt: min doubled
// attempt-1 times, capped at max, then drawn between half and all of that
// (jitter, so that the workers do not retry in lockstep); at least what
// the receiver asked for with Retry-After, still capped at max.
func backoff(attempt int, lo, hi, asked time.Duration) time.Duration {
	d := hi
	if attempt-1 < 62 {
		if x := lo << (attempt - 1); x > 0 && x < hi {
			d = x
		}
	}
	d = d/2 + rand.N(d/2+1)
	if asked > d {
		d = min(asked, hi)
	}
	return d
}

// ack acks j and waits for the server to confirm it, trying again until
// it does, or until the stop's bound has passed (false: the receiver got
// the event, and will get it again).
func (w *Webhook) ack(j job) bool {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.hard, ackTimeout)
		err := j.msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			return true
		}
		w.stats.ackErrors.Add(1)
		if w.hard.Err() != nil {
			return false
		}
		w.log.Warn("ack not confirmed; retrying", "seq", j.e.seq, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff(attempt, w.cfg.MinBackoff, min(w.cfg.MaxBackoff, 5*time.Second), 0))
		select {
		case <-t.C:
		case <-w.hard.Done():
			t.Stop()
			return false
		}
	}
}

// warnEvery bounds the warnings about a failing receiver: at most one per
// interval (each attempt is logged at debug), and an info line at the next
// 2xx after one.
const warnEvery = 10 * time.Second

func (w *Webhook) logFailure(e *entry, attempt int, o outcome) {
	w.log.Debug("POST failed; retrying", "seq", e.seq, "subject", e.subject, "attempt", attempt,
		"reason", reasonNames[o.reason], "status", o.status, "err", o.err)
	now := time.Now().UnixNano()
	last := w.lastWarn.Load()
	if (last == 0 || now-last >= int64(warnEvery)) && w.lastWarn.CompareAndSwap(last, now) {
		w.warned.Store(true)
		w.log.Warn("webhook receiver failing; retrying", "url", w.url, "reason", reasonNames[o.reason],
			"status", o.status, "err", o.err, "failed_attempts", w.stats.failedTotal())
	}
}
