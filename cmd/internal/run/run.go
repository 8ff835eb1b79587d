// Package run holds what the service binaries share: the flags of each
// service (every one with an environment fallback), and starting and
// stopping the services in the documented order.
package run

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"crypto/rand"
	"encoding/hex"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/events"
	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/subject"
)

// DefaultListen is where edges accept WebSocket clients.
const DefaultListen = ":9090"

// Admin defines the -admin flag: where /metrics, /healthz and /readyz are
// served.
func Admin(fs *flag.FlagSet) *string {
	return cli.String(fs, "admin", "SIGNAL_ADMIN", "", "address for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9190 (default: not served)")
}

// DefaultGOGC is the garbage collector's target (Go's GOGC) unless -gogc or
// GOGC says otherwise. Half Go's default: these processes hold mostly
// long-lived per-connection state and allocate little per message, so a
// smaller heap headroom costs no measurable relay throughput and keeps about
// 1.3 KB less resident per idle user (README, Performance).
const DefaultGOGC = "50"

// Process holds the flags every binary has: -admin, -gogc and -log-level.
type Process struct {
	Admin  *string
	gc     func() error
	logger func() *slog.Logger
}

// AddProcessFlags defines them on fs.
func AddProcessFlags(fs *flag.FlagSet) *Process {
	return &Process{Admin: Admin(fs), gc: GC(fs), logger: cli.LogLevel(fs)}
}

// Parse parses args into fs, applies -gogc and returns the logger that
// -log-level asks for.
func (p *Process) Parse(fs *flag.FlagSet, args []string) (*slog.Logger, error) {
	_ = fs.Parse(args) // flag.ExitOnError
	log := p.logger()
	return log, p.gc()
}

// GC defines -gogc; the returned function applies it once flags are parsed.
func GC(fs *flag.FlagSet) func() error {
	v := cli.String(fs, "gogc", "GOGC", DefaultGOGC, "garbage collector target: heap growth between collections in percent of the live heap, or off (Go's GOGC)")
	return func() error {
		if *v == "off" {
			debug.SetGCPercent(-1)
			return nil
		}
		n, err := strconv.Atoi(*v)
		if err != nil || n < 0 {
			return fmt.Errorf("-gogc %q: want a percentage or off", *v)
		}
		debug.SetGCPercent(n)
		return nil
	}
}

// DefaultShutdownTimeout bounds a graceful stop.
const DefaultShutdownTimeout = 15 * time.Second

// EdgeFlags are the flags of an edge.
type EdgeFlags struct {
	Listen          *string
	ID              *string
	MaxFrame        *int
	WriteQueue      *int
	WriteQueueBytes *int
	WriteTimeout    *time.Duration
	RegistryTimeout *time.Duration
	Heartbeat       *time.Duration
	FenceAfter      *time.Duration
	PingAfter       *time.Duration
	PongTimeout     *time.Duration
	ResumeGrace     *time.Duration
	ResumeFrames    *int
	ResumeBytes     *int
	MaxRooms        *int
	MaxRoom         *int
	MaxWatch        *int
	CallEvents      *bool
	Origins         *string
	MaxConns        *int
	MaxConnsPerIP   *int
	Rate            *int
	Burst           *int
	MaxLogins       *int
	MaxCandidates   *int
	TrustedProxies  *string
	TLSCert         *string
	TLSKey          *string
}

// AddEdgeFlags defines the edge's flags on fs.
func AddEdgeFlags(fs *flag.FlagSet) *EdgeFlags {
	return &EdgeFlags{
		Listen:          cli.String(fs, "listen", "SIGNAL_LISTEN", DefaultListen, "address for WebSocket clients"),
		ID:              cli.String(fs, "id", "EDGE_ID", "", "stable edge id (default: host name plus a random suffix)"),
		MaxFrame:        cli.Int(fs, "max-frame", "SIGNAL_MAX_FRAME", edge.DefaultMaxFrameSize, "largest client message in bytes; bigger closes the connection with 1009"),
		WriteQueue:      cli.Int(fs, "write-queue", "SIGNAL_WRITE_QUEUE", edge.DefaultWriteQueue, "frames that may wait for one client; a client that lets them pile up is disconnected"),
		WriteQueueBytes: cli.Int(fs, "write-queue-bytes", "SIGNAL_WRITE_QUEUE_BYTES", edge.DefaultWriteQueueBytes, "bytes that may wait for one client, likewise"),
		WriteTimeout:    cli.Duration(fs, "write-timeout", "SIGNAL_WRITE_TIMEOUT", edge.DefaultWriteTimeout, "bound on each socket write"),
		RegistryTimeout: cli.Duration(fs, "registry-timeout", "SIGNAL_REGISTRY_TIMEOUT", edge.DefaultRegistryTimeout, "bound on each registry request"),
		Heartbeat:       cli.Duration(fs, "heartbeat", "SIGNAL_HEARTBEAT", edge.DefaultHeartbeat, "how often the edge refreshes its lease (keep well under the registry's -lease)"),
		FenceAfter:      cli.Duration(fs, "fence-after", "SIGNAL_FENCE_AFTER", edge.DefaultFenceAfter, "close every session when heartbeats have failed this long, before the registry's -lease can give the names away (keep it plus one -heartbeat under -lease; 0: two heartbeats; negative: never)"),
		PingAfter:       cli.Duration(fs, "ping-after", "SIGNAL_PING_AFTER", edge.DefaultPingAfter, "ping a client after this long without a frame from it"),
		PongTimeout:     cli.Duration(fs, "pong-timeout", "SIGNAL_PONG_TIMEOUT", edge.DefaultPongTimeout, "disconnect a pinged client still silent after this long"),
		ResumeGrace:     cli.Duration(fs, "resume-grace", "SIGNAL_RESUME_GRACE", edge.DefaultResumeGrace, "how long a resumable session (login with \"resumable\":true) whose connection dropped is held for its client to resume it (negative: never hold)"),
		ResumeFrames:    cli.Int(fs, "resume-frames", "SIGNAL_RESUME_FRAMES", edge.DefaultResumeFrames, "frames kept for one held session; beyond, their senders are told the user is not online"),
		ResumeBytes:     cli.Int(fs, "resume-bytes", "SIGNAL_RESUME_BYTES", edge.DefaultResumeBytes, "bytes kept for one held session (at most 524288)"),
		MaxRooms:        cli.Int(fs, "max-rooms", "SIGNAL_MAX_ROOMS", edge.DefaultMaxRooms, "rooms one connection may be in"),
		MaxRoom:         cli.Int(fs, "max-room", "SIGNAL_MAX_ROOM", edge.DefaultMaxRoom, "members of a room (the registry's -max-room applies too; the smaller wins)"),
		MaxWatch:        cli.Int(fs, "max-watch", "SIGNAL_MAX_WATCH", edge.DefaultMaxWatch, "names one connection may watch for presence"),
		CallEvents:      cli.Bool(fs, "call-events", "SIGNAL_CALL_EVENTS", true, "publish call_start (each answer relayed) and call_end to the SIGNAL_EVENTS stream (false: backends that do not read them save a JetStream write per answer)"),
		Origins:         cli.String(fs, "origins", "SIGNAL_ORIGINS", "", "browser origins allowed to connect, comma separated (scheme://host[:port]; * for any); default: localhost pages and pages served by this host"),
		MaxConns:        cli.Int(fs, "max-conns", "SIGNAL_MAX_CONNS", edge.DefaultMaxConns, "connections per edge (negative: no limit)"),
		MaxConnsPerIP:   cli.Int(fs, "max-conns-per-ip", "SIGNAL_MAX_CONNS_PER_IP", edge.DefaultMaxConnsPerIP, "connections per client address (negative: no limit)"),
		Rate:            cli.Int(fs, "rate", "SIGNAL_RATE", edge.DefaultRate, "messages per second per connection (negative: no limit)"),
		Burst:           cli.Int(fs, "burst", "SIGNAL_BURST", edge.DefaultBurst, "burst of messages per connection above -rate"),
		MaxLogins:       cli.Int(fs, "max-logins", "SIGNAL_MAX_LOGINS", edge.DefaultMaxLogins, "login attempts per connection"),
		MaxCandidates:   cli.Int(fs, "max-candidates", "SIGNAL_MAX_CANDIDATES", edge.DefaultMaxCandidates, "candidates per call (between two offers or answers of a connection)"),
		TrustedProxies:  cli.String(fs, "trusted-proxies", "SIGNAL_TRUSTED_PROXIES", "", "CIDRs of proxies whose X-Forwarded-For is believed, comma separated (default: none)"),
		TLSCert:         cli.String(fs, "tls-cert", "SIGNAL_TLS_CERT", "", "certificate file: serve wss:// (with -tls-key)"),
		TLSKey:          cli.String(fs, "tls-key", "SIGNAL_TLS_KEY", "", "private key file for -tls-cert"),
	}
}

// Identity returns the edge's id (-id, or DefaultEdgeID) and a new random
// instance id: the name of the edge's NATS connection is
// wire.EdgeConnName(id, instance), so that the registry recognises its
// disconnect event.
func (f *EdgeFlags) Identity() (id, instance string) {
	id = *f.ID
	if id == "" {
		id = DefaultEdgeID()
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return id, hex.EncodeToString(b)
}

// Config builds the edge configuration for the edge id and instance.
func (f *EdgeFlags) Config(nc *nats.Conn, id, instance string, log *slog.Logger) (edge.Config, error) {
	var proxies []netip.Prefix
	for _, p := range splitList(*f.TrustedProxies) {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return edge.Config{}, fmt.Errorf("-trusted-proxies %q: %w", p, err)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		proxies = append(proxies, pfx)
	}
	return edge.Config{
		AllowedOrigins:  splitList(*f.Origins),
		TrustedProxies:  proxies,
		MaxConns:        *f.MaxConns,
		MaxConnsPerIP:   *f.MaxConnsPerIP,
		Rate:            float64(*f.Rate),
		Burst:           *f.Burst,
		MaxLogins:       *f.MaxLogins,
		MaxCandidates:   *f.MaxCandidates,
		NC:              nc,
		ID:              id,
		Instance:        instance,
		Listen:          *f.Listen,
		MaxFrameSize:    *f.MaxFrame,
		WriteQueue:      *f.WriteQueue,
		WriteQueueBytes: *f.WriteQueueBytes,
		WriteTimeout:    *f.WriteTimeout,
		RegistryTimeout: *f.RegistryTimeout,
		Heartbeat:       *f.Heartbeat,
		FenceAfter:      *f.FenceAfter,
		PingAfter:       *f.PingAfter,
		PongTimeout:     *f.PongTimeout,
		ResumeGrace:     *f.ResumeGrace,
		ResumeFrames:    *f.ResumeFrames,
		ResumeBytes:     *f.ResumeBytes,
		MaxRooms:        *f.MaxRooms,
		MaxRoom:         *f.MaxRoom,
		MaxWatch:        *f.MaxWatch,
		NoCallEvents:    !*f.CallEvents,
		Logger:          log,
	}, nil
}

// Listener opens the edge's listener: TLS when -tls-cert and -tls-key are set.
func (f *EdgeFlags) Listener() (net.Listener, error) {
	if (*f.TLSCert == "") != (*f.TLSKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	ln, err := net.Listen("tcp", *f.Listen)
	if err != nil {
		return nil, err
	}
	if *f.TLSCert == "" {
		return ln, nil
	}
	cert, err := tls.LoadX509KeyPair(*f.TLSCert, *f.TLSKey)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// DefaultEdgeID is the host name plus a random suffix.
func DefaultEdgeID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "edge"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return sanitizeID(h) + "-" + hex.EncodeToString(b)
}

// sanitizeID keeps an id usable in subjects and keys: [A-Za-z0-9_-].
func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// ValidID reports whether id is usable as an edge id.
func ValidID(id string) error {
	if id == "" || sanitizeID(id) != id {
		return fmt.Errorf("edge id %q: use only [A-Za-z0-9_-]", id)
	}
	return nil
}

// RegistryFlags are the flags of a registry.
type RegistryFlags struct {
	Replicas         *int
	Cluster          *string
	Workers          *int
	Lease            *time.Duration
	MaxRoom          *int
	EventsMaxAge     *time.Duration
	EventsMaxBytes   *int64
	DisconnectEvents *string
	DisconnectGrace  *time.Duration
}

// AddRegistryFlags defines the registry's flags on fs. With the edge's
// flags on the same set (signal), -max-room is the edge's flag and is
// passed to both.
func AddRegistryFlags(fs *flag.FlagSet, defReplicas int) *RegistryFlags {
	f := &RegistryFlags{
		Replicas:         cli.Int(fs, "replicas", "SIGNAL_KV_REPLICAS", defReplicas, "replicas of the KV buckets and the events stream when the registry creates them (3 in a NATS cluster)"),
		Cluster:          cli.String(fs, "kv-cluster", "SIGNAL_KV_CLUSTER", "", "NATS cluster to place the buckets and the events stream in (the home cluster of a super-cluster; default: anywhere)"),
		Workers:          cli.Int(fs, "workers", "SIGNAL_REGISTRY_WORKERS", registry.DefaultWorkers, "registry requests served at once"),
		Lease:            cli.Duration(fs, "lease", "SIGNAL_LEASE", registry.DefaultLease, "release every name of an edge that has not heartbeaten for this long"),
		EventsMaxAge:     cli.Duration(fs, "events-max-age", "SIGNAL_EVENTS_MAX_AGE", events.DefaultMaxAge, "keep lifecycle events in the SIGNAL_EVENTS stream this long"),
		EventsMaxBytes:   cli.Int64(fs, "events-max-bytes", "SIGNAL_EVENTS_MAX_BYTES", events.DefaultMaxBytes, "bound the SIGNAL_EVENTS stream in bytes, oldest first (negative: no bound)"),
		DisconnectEvents: cli.String(fs, "disconnect-events", "SIGNAL_DISCONNECT_EVENTS", subject.DisconnectEvents, "subject of the NATS server's client disconnect events, as the account imports them (- for none: then only -lease notices a dead edge)"),
		DisconnectGrace:  cli.Duration(fs, "disconnect-grace", "SIGNAL_DISCONNECT_GRACE", registry.DefaultDisconnectGrace, "how long an edge whose NATS connection closed has to show it lives before its names are released"),
	}
	if fs.Lookup("max-room") == nil {
		f.MaxRoom = cli.Int(fs, "max-room", "SIGNAL_MAX_ROOM", registry.DefaultMaxRoom, "members of a room")
	}
	return f
}

// Config builds the registry configuration. maxRoom, when not nil, is the
// -max-room of the edge flags on the same set.
func (f *RegistryFlags) Config(nc *nats.Conn, log *slog.Logger, maxRoom *int) registry.Config {
	if f.MaxRoom != nil {
		maxRoom = f.MaxRoom
	}
	cfg := registry.Config{
		NC: nc, Replicas: *f.Replicas, Cluster: *f.Cluster, Workers: *f.Workers, Lease: *f.Lease,
		EventsMaxAge: *f.EventsMaxAge, EventsMaxBytes: *f.EventsMaxBytes,
		DisconnectEvents: *f.DisconnectEvents, DisconnectGrace: *f.DisconnectGrace, Logger: log,
	}
	if maxRoom != nil {
		cfg.MaxRoom = *maxRoom
	}
	return cfg
}

// Connect connects to NATS for one service and waits, within ctx, until the
// connection is up. auth may be nil (the embedded server needs none).
func Connect(ctx context.Context, url, name string, auth *cli.NATSAuth, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	cfg := natsconn.Config{URL: url, Name: name, Logger: log, Options: opts}
	if auth != nil {
		cfg.User, cfg.Password, cfg.Creds, cfg.NKey = *auth.User, *auth.Password, *auth.Creds, *auth.NKey
		cfg.CA, cfg.Cert, cfg.Key = *auth.CA, *auth.Cert, *auth.Key
	}
	nc, err := natsconn.Connect(cfg)
	if err != nil {
		return nil, err
	}
	if err := natsconn.WaitConnected(ctx, nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return nc, nil
}

// StartEdge starts an edge on its listener. The returned stop function
// shuts it down and drains its NATS connection within ctx.
func StartEdge(ctx context.Context, cfg edge.Config, ln net.Listener, mr *prometheus.Registry, log *slog.Logger) (stop func(context.Context) error, serveErr <-chan error, err error) {
	e, err := edge.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if mr != nil {
		mr.MustRegister(e.Collector())
		metrics.NATSConnected(mr, "edge", cfg.NC)
	}
	errc := make(chan error, 1)
	go func() { errc <- e.Serve(ln) }()
	log.Info("edge listening", "addr", ln.Addr().String(), "id", cfg.ID)
	stop = func(ctx context.Context) error {
		err := e.Shutdown(ctx)
		return errors.Join(err, natsconn.Drain(ctx, cfg.NC))
	}
	return stop, errc, nil
}
