// Package natsconn connects the services to NATS the same way everywhere:
// reconnect forever, log every connection state change once, and let the
// caller drain on shutdown.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Config says how to connect. The zero value of each field selects the
// default named beside it.
type Config struct {
	// URL is one or more NATS URLs, comma separated. Required.
	URL string
	// Name is the connection name shown by "nats server report connections".
	Name string
	// Logger receives connection state changes. Zero: slog.Default().
	Logger *slog.Logger
	// DrainTimeout bounds Drain. Zero: DefaultDrainTimeout.
	DrainTimeout time.Duration
	// ReconnectBuffer is how many bytes of publishes are buffered while
	// disconnected; zero: nats.go's default (8 MiB); negative disables it so
	// that publishes fail at once while NATS is away.
	ReconnectBuffer int
	// User and Password authenticate with user and password.
	User, Password string
	// Creds is a credentials file (user JWT and nkey seed).
	Creds string
	// NKey is an nkey seed file.
	NKey string
	// CA turns TLS on and verifies the servers against this CA file; Cert
	// and Key are a client certificate for mutual TLS.
	CA, Cert, Key string
	// Options are added last.
	Options []nats.Option
	// NoTap leaves the connection without a Tap. Zero: a connection without
	// TLS (and without a custom dialer of the caller's) gets one, which
	// passes everything through until a Taker is set (TapOf).
	NoTap bool
}

// authOptions turns the credential and TLS fields into nats.go options.
func (cfg Config) authOptions() ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return nil, fmt.Errorf("natsconn: nkey %s: %w", cfg.NKey, err)
		}
		opts = append(opts, o)
	}
	if cfg.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.CA))
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("natsconn: a client certificate needs both cert and key")
	}
	if cfg.Cert != "" {
		opts = append(opts, nats.ClientCert(cfg.Cert, cfg.Key))
	}
	return opts, nil
}

// DefaultDrainTimeout bounds how long Drain waits for in-flight messages.
const DefaultDrainTimeout = 5 * time.Second

// Connect dials NATS. It retries in the background when no server answers
// yet (nats.RetryOnFailedConnect), so a service can start before NATS; it
// returns an error only for a malformed configuration.
func Connect(cfg Config) (*nats.Conn, error) {
	if cfg.URL == "" {
		return nil, errors.New("natsconn: no NATS URL")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	dt := cfg.DrainTimeout
	if dt == 0 {
		dt = DefaultDrainTimeout
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DrainTimeout(dt),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	if cfg.ReconnectBuffer != 0 {
		opts = append(opts, nats.ReconnectBufSize(cfg.ReconnectBuffer))
	}
	auth, err := cfg.authOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	opts = append(opts, cfg.Options...)
	// As nats.Connect, with the Tap put in once every option is known.
	o := nats.GetDefaultOptions()
	for _, u := range strings.Split(cfg.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			o.Servers = append(o.Servers, u)
		}
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("natsconn: %w", err)
		}
	}
	if !cfg.NoTap && o.CustomDialer == nil && !o.Secure && o.TLSConfig == nil && o.TLSCertCB == nil && o.RootCAsCB == nil && plainURLs(o.Servers) {
		t := NewTap(TapPrefix)
		if o.InProcessServer != nil {
			o.InProcessServer = &tapInProcess{tap: t, p: o.InProcessServer}
		} else {
			o.CustomDialer = &tapDialer{tap: t, timeout: o.Timeout}
		}
	}
	nc, err := o.Connect()
	if err != nil {
		return nil, fmt.Errorf("natsconn: %w", err)
	}
	return nc, nil
}

// plainURLs reports whether every server URL is plain NATS (nats://, or no
// scheme): tls:// turns TLS on and ws:// or wss:// speak websocket, which
// the Tap does not follow.
func plainURLs(urls []string) bool {
	for _, u := range urls {
		scheme, _, ok := strings.Cut(u, "://")
		if ok && !strings.EqualFold(scheme, "nats") {
			return false
		}
	}
	return true
}

// Drain drains nc and waits until it is closed or ctx is done.
func Drain(ctx context.Context, nc *nats.Conn) error {
	if nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
}

// WaitConnected blocks until nc is connected or ctx is done.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsconn: not connected to NATS: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
