package edge

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/natsrtc/signal/services/protocol"
)

// Limits and their defaults. Each trips a metric (signal_edge_errors_total
// by reason) when it refuses something.
const (
	// DefaultMaxConns bounds the sockets of one edge.
	DefaultMaxConns = 50000
	// DefaultMaxConnsPerIP bounds the sockets from one client address.
	DefaultMaxConnsPerIP = 1000
	// DefaultRate and DefaultBurst: messages per second one connection may
	// send, as a token bucket. A call is a few dozen messages; the burst
	// covers a client that sends its candidates all at once.
	DefaultRate  = 100
	DefaultBurst = 200
	// DefaultMaxLogins bounds login attempts on one connection.
	DefaultMaxLogins = 20
	// DefaultMaxCandidates bounds the candidates a connection sends between
	// two offers or answers (one call).
	DefaultMaxCandidates = 500
	// abuseFactor: a connection whose refused messages reach abuseFactor
	// times the burst is closed with 1008.
	abuseFactor = 10
)

// admit decides whether an upgrade request may become a connection. It
// answers the refusals itself and returns false for them.
func (e *Edge) admit(w http.ResponseWriter, r *http.Request) (ip netip.Addr, authName string, ok bool) {
	if !e.originAllowed(r) {
		e.stats.errors[reasonOrigin].Add(1)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return ip, "", false
	}
	if e.cfg.Auth != nil {
		name, err := e.cfg.Auth.Authenticate(r)
		if err != nil {
			e.stats.errors[reasonAuth].Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="signal"`)
			http.Error(w, "invalid or missing token", http.StatusUnauthorized)
			return ip, "", false
		}
		authName = name
	}
	ip = e.clientIP(r)
	t := &e.conns
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.cfg.MaxConns > 0 && t.slots >= e.cfg.MaxConns {
		e.stats.errors[reasonConnLimit].Add(1)
		http.Error(w, "edge is full", http.StatusServiceUnavailable)
		return ip, "", false
	}
	if e.cfg.MaxConnsPerIP > 0 && t.perIP[ip] >= e.cfg.MaxConnsPerIP {
		e.stats.errors[reasonIPLimit].Add(1)
		http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
		return ip, "", false
	}
	// Both given back by release if the upgrade fails, or at teardown.
	t.perIP[ip]++
	t.slots++
	return ip, authName, true
}

// release gives back what admit took for a connection from ip.
func (e *Edge) release(ip netip.Addr) {
	t := &e.conns
	t.mu.Lock()
	t.slots--
	if n := t.perIP[ip] - 1; n > 0 {
		t.perIP[ip] = n
	} else {
		delete(t.perIP, ip)
	}
	t.mu.Unlock()
}

// originAllowed applies the origin policy. Clients that send no Origin
// (not browsers) are always allowed. With no AllowedOrigins, browsers on
// localhost and pages served by this same host are; "*" allows every
// origin; otherwise the origin must be listed (scheme://host[:port]).
func (e *Edge) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(e.cfg.AllowedOrigins) == 0 {
		h := u.Hostname()
		if h == "localhost" || h == "127.0.0.1" || h == "::1" || strings.HasSuffix(h, ".localhost") {
			return true
		}
		return strings.EqualFold(u.Host, r.Host)
	}
	for _, o := range e.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

// clientIP is the peer's address, or, when the peer is a trusted proxy,
// the right-most address in X-Forwarded-For that is not a trusted proxy.
func (e *Edge) clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr().Unmap()
	} else if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ip, _ = netip.ParseAddr(h)
	}
	if !e.trusted(ip) {
		return ip
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return ip // malformed: do not trust the rest
			}
			a = a.Unmap()
			if !e.trusted(a) {
				return a
			}
			ip = a
		}
	}
	return ip
}

func (e *Edge) trusted(ip netip.Addr) bool {
	for _, p := range e.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// bucket is a token bucket, touched only by the connection's read loop.
type bucket struct {
	tokens  float64
	last    int64 // unix nanoseconds
	refused uint32
}

// allow takes a token if there is one.
func (b *bucket) allow(now int64, rate float64, burst int) bool {
	if b.last == 0 {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+float64(now-b.last)*rate/float64(time.Second))
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		if b.refused > 0 {
			b.refused-- // forgiven slowly: only a sender that keeps flooding is closed
		}
		return true
	}
	b.refused++
	return false
}

// limited reports whether the client may not send this message now. It
// tells the client once per second of limiting, and closes a connection
// that keeps flooding with 1008.
// ok is false when the connection was closed for it. A login (data, when
// given, is one) is answered with a login reply instead, as every login is.
func (c *conn) limited(data []byte) (drop, ok bool) {
	cfg := &c.e.cfg
	if cfg.Rate <= 0 {
		return false, true
	}
	now := time.Now().UnixNano()
	if c.bucket.allow(now, cfg.Rate, cfg.Burst) {
		return false, true
	}
	c.e.stats.errors[reasonRateLimited].Add(1)
	if c.bucket.refused >= abuseFactor*uint32(cfg.Burst) {
		c.fail(closeLimit("rate limit (" + rateString(cfg.Rate) + " messages/s) exceeded, kept flooding"))
		return true, false
	}
	if isLogin(data) {
		if c.countLogin() {
			c.e.stats.logins[loginInvalid].Add(1)
			c.loginReply(false, rateMessage(cfg)+": login dropped; try again in a moment")
		}
		return true, true
	}
	if now-c.limitedAt > int64(time.Second) {
		c.limitedAt = now
		c.enqueue(ws.OpText, protocol.AppendError(nil, rateMessage(cfg)+": message dropped"))
	}
	return true, true
}

// rateMessage says which rate limit a client is over (made only when it is
// told: most refused messages of a flood are not).
func rateMessage(cfg *Config) string {
	return "rate limit exceeded (limit " + rateString(cfg.Rate) + " messages/s, burst " + strconv.Itoa(cfg.Burst) + ", -rate)"
}

// isLogin reports whether data is a login message (parsed only when it
// names one at all: a flood of other messages costs a scan).
func isLogin(data []byte) bool {
	if !bytes.Contains(data, []byte("login")) {
		return false
	}
	f := framePool.Get().(*protocol.Frame)
	defer framePool.Put(f)
	return protocol.Parse(data, f) == nil && f.Type == protocol.TypeLogin
}

func rateString(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// throttle is how long to stop reading from a connection that has used up
// its rate: until it has earned one message again. Zero when it may send.
func (c *conn) throttle() time.Duration {
	rate := c.e.cfg.Rate
	if rate <= 0 || c.bucket.tokens >= 1 || c.bucket.last == 0 {
		return 0
	}
	return time.Duration((1 - c.bucket.tokens) / rate * float64(time.Second))
}
