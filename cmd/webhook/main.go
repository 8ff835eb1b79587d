// Command webhook POSTs every lifecycle event of the SIGNAL_EVENTS stream to
// a URL, signed with HMAC-SHA256, retrying until the receiver answers 2xx:
// at least once, in order per user. It reads the stream with a durable
// JetStream consumer, so it goes on where it stopped. The README's
// "Webhooks" section documents its flags, the POST and its signature, and
// the guarantees; package cmd/internal/webhook explains them.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/natsrtc/signal/cmd/internal/run"
	"github.com/natsrtc/signal/cmd/internal/webhook"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/natsconn"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("webhook", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: webhook -url URL -secret-file FILE [flags]\n\nPOSTs each event of the JetStream stream SIGNAL_EVENTS to a URL, signed\n(Signal-Signature: sha256=<hex HMAC-SHA256(secret, body)>), retrying until a 2xx.\nEvery flag can also be set by the environment variable named in its description.\n\n")
		fs.PrintDefaults()
	}
	natsURL := cli.NATS(fs)
	auth := cli.AddNATSAuth(fs)
	url := cli.String(fs, "url", "SIGNAL_WEBHOOK_URL", "", "where to POST the events, http:// or https:// (required)")
	// Not cli.String: -h would print the environment's secret as the default.
	secret := fs.String("secret", "", "HMAC key of the signatures (this or -secret-file is required; a flag's value shows in ps, prefer the file or the environment) (env SIGNAL_WEBHOOK_SECRET)")
	secretFile := cli.String(fs, "secret-file", "SIGNAL_WEBHOOK_SECRET_FILE", "", "file holding the HMAC key (surrounding white space is ignored)")
	durable := cli.String(fs, "durable", "SIGNAL_WEBHOOK_DURABLE", webhook.DefaultDurable, "name of the durable JetStream consumer; instances with one name share the work (order per user then no longer holds)")
	filter := cli.String(fs, "filter", "SIGNAL_WEBHOOK_FILTER", webhook.DefaultFilter, "which events, a subject filter such as events.login.>")
	deliverNew := cli.Bool(fs, "deliver-new", "SIGNAL_WEBHOOK_DELIVER_NEW", false, "a consumer made now starts with new events (default: with the oldest the stream retains)")
	timeout := cli.Duration(fs, "timeout", "SIGNAL_WEBHOOK_TIMEOUT", webhook.DefaultTimeout, "bound on each POST")
	minBackoff := cli.Duration(fs, "min-backoff", "SIGNAL_WEBHOOK_MIN_BACKOFF", webhook.DefaultMinBackoff, "wait after a first failed attempt; it doubles up to -max-backoff, with jitter")
	maxBackoff := cli.Duration(fs, "max-backoff", "SIGNAL_WEBHOOK_MAX_BACKOFF", webhook.DefaultMaxBackoff, "longest wait between attempts (retries never give up)")
	workers := cli.Int(fs, "workers", "SIGNAL_WEBHOOK_WORKERS", webhook.DefaultWorkers, "POSTs at once, for different users; one user's events go one at a time, in order")
	ackWait := cli.Duration(fs, "ack-wait", "SIGNAL_WEBHOOK_ACK_WAIT", webhook.DefaultAckWait, "consumer ack wait: redelivery after a crash, and the longest wait at start for a crashed predecessor's events")
	maxAckPending := cli.Int(fs, "max-ack-pending", "SIGNAL_WEBHOOK_MAX_ACK_PENDING", webhook.DefaultMaxAckPending, "events held unacked at once, by all instances of the durable")
	shutdownTimeout := cli.Duration(fs, "shutdown-timeout", "SIGNAL_SHUTDOWN_TIMEOUT", run.DefaultShutdownTimeout, "bound on a graceful stop: POSTs in flight may finish within it")
	pf := run.AddProcessFlags(fs)
	log, err := pf.Parse(fs, os.Args[1:])
	if err != nil {
		return err
	}
	if *url == "" {
		return errors.New("-url (SIGNAL_WEBHOOK_URL) is required")
	}
	if *secret == "" {
		*secret = os.Getenv("SIGNAL_WEBHOOK_SECRET")
	}
	key, err := readSecret(*secret, *secretFile)
	if err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	nc, err := run.Connect(ctx, *natsURL, "webhook", auth, log)
	if err != nil {
		return err
	}
	w, err := webhook.New(webhook.Config{
		NC:              nc,
		URL:             *url,
		Secret:          key,
		Durable:         *durable,
		Filter:          *filter,
		DeliverNew:      *deliverNew,
		Timeout:         *timeout,
		MinBackoff:      *minBackoff,
		MaxBackoff:      *maxBackoff,
		Workers:         *workers,
		AckWait:         *ackWait,
		MaxAckPending:   *maxAckPending,
		ShutdownTimeout: *shutdownTimeout,
		Logger:          log,
	})
	if err != nil {
		nc.Close()
		return err
	}
	mr := metrics.NewRegistry()
	mr.MustRegister(w.Collectors()...)
	metrics.NATSConnected(mr, "webhook", nc)
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	if err := metrics.Serve(actx, *pf.Admin, metrics.Handler(mr, metrics.NATSReady(nc), w.Ready), log); err != nil {
		nc.Close()
		return err
	}

	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	select {
	case <-ctx.Done():
		log.Info("signal received; shutting down", "timeout", shutdownTimeout.String())
	case err = <-runErr:
		log.Error("stopped delivering", "err", err)
		runErr <- err
	}
	sctx, scancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer scancel()
	stopErr := w.Stop(sctx)
	return errors.Join(<-runErr, stopErr, natsconn.Drain(sctx, nc))
}

// readSecret returns the key from -secret or -secret-file: exactly one of
// them.
func readSecret(secret, file string) ([]byte, error) {
	switch {
	case secret != "" && file != "":
		return nil, errors.New("-secret and -secret-file: give one of them")
	case secret != "":
		return []byte(secret), nil
	case file == "":
		return nil, errors.New("-secret-file (SIGNAL_WEBHOOK_SECRET_FILE) or -secret (SIGNAL_WEBHOOK_SECRET) is required")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("-secret-file: %w", err)
	}
	if b = bytes.TrimSpace(b); len(b) == 0 {
		return nil, fmt.Errorf("-secret-file %s: empty", file)
	}
	return b, nil
}
