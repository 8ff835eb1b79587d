// Command signal runs the whole signaling system in one process for
// development and tests: an embedded NATS server with JetStream (so the nats
// CLI can watch it), the registry and one WebSocket edge. With -nats (or
// SIGNAL_NATS_URL) it embeds no server and runs the registry and the edge against
// those NATS servers instead.
//
//	go run ./cmd/signal
//
// then point WebSocket clients at ws://localhost:9090 and the nats CLI at
// nats://127.0.0.1:4222.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/natsrtc/signal/cmd/internal/run"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/embed"
	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/natsconn"
	"github.com/natsrtc/signal/services/wire"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "signal:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("signal", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: signal [flags]\n\nRuns an embedded NATS server with JetStream, the registry and a WebSocket edge in one process\n(with -nats or SIGNAL_NATS_URL: the registry and the edge against those NATS servers, no embedded one).\nEvery flag can also be set by the environment variable named in its description.\n\n")
		fs.PrintDefaults()
	}
	// Not NATS_URL: operators export it for the nats CLI (often with an
	// observer's credentials), and the development command must not turn
	// into a client of their cluster because of it.
	natsURL := cli.String(fs, "nats", "SIGNAL_NATS_URL", "", "NATS server URL(s), comma separated, to use instead of an embedded server (default: none: embed one on -nats-listen)")
	auth := cli.AddNATSAuth(fs)
	natsListen := cli.String(fs, "nats-listen", "SIGNAL_NATS_LISTEN", "127.0.0.1:4222", "address of the embedded NATS server (port 0: any free port; not with -nats)")
	data := cli.String(fs, "data", "SIGNAL_DATA", "", "JetStream store directory of the embedded server; restarting with the same directory keeps state (default: a new temporary directory)")
	natsLogs := cli.Bool(fs, "nats-logs", "SIGNAL_NATS_LOGS", false, "print the embedded NATS server's log")
	shutdownTimeout := cli.Duration(fs, "shutdown-timeout", "SIGNAL_SHUTDOWN_TIMEOUT", run.DefaultShutdownTimeout, "bound on a graceful stop")
	ef := run.AddEdgeFlags(fs)
	sf := run.AddSecurityFlags(fs)
	rf := run.AddRegistryFlags(fs, registry.DefaultReplicas)
	pf := run.AddProcessFlags(fs)
	log, err := pf.Parse(fs, os.Args[1:])
	if err != nil {
		return err
	}
	if *ef.ID != "" {
		if err := run.ValidID(*ef.ID); err != nil {
			return err
		}
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	// The services' connections: in process to the embedded server, or
	// to the NATS servers -nats names, with its credentials.
	url := *natsURL
	var connAuth *cli.NATSAuth
	var inProc []nats.Option
	if url == "" {
		ns, err := embed.Start(embed.Config{Listen: *natsListen, StoreDir: *data, Logs: *natsLogs})
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("nats server stopped")
		}()
		url = ns.ClientURL()
		inProc = []nats.Option{nats.InProcessServer(ns)}
		log.Info("nats server ready", "url", url, "store", ns.JetStreamConfig().StoreDir)
	} else {
		connAuth = auth
		log.Info("using the NATS servers of -nats; no embedded server", "url", url)
	}

	rnc, err := run.Connect(ctx, url, "registry", connAuth, log, inProc...)
	if err != nil {
		return err
	}
	reg, err := registry.New(ctx, rf.Config(rnc, log, ef.MaxRoom))
	if err != nil {
		rnc.Close()
		return err
	}
	stopRegistry := func(ctx context.Context) error {
		return errors.Join(reg.Stop(), natsconn.Drain(ctx, rnc))
	}

	id, instance := ef.Identity()
	enc, err := run.Connect(ctx, url, wire.EdgeConnName(id, instance), connAuth, log, inProc...)
	if err != nil {
		return errors.Join(err, stopRegistry(context.Background()))
	}
	ln, err := ef.Listener()
	if err != nil {
		enc.Close()
		return errors.Join(err, stopRegistry(context.Background()))
	}
	cfg, err := ef.Config(enc, id, instance, log)
	if err == nil {
		err = sf.Apply(&cfg)
	}
	if err != nil {
		enc.Close()
		return errors.Join(err, stopRegistry(context.Background()))
	}
	cfg.Listen = ln.Addr().String()
	mr := metrics.NewRegistry()
	mr.MustRegister(reg.Collectors()...)
	metrics.NATSConnected(mr, "registry", rnc)
	stopEdge, serveErr, err := run.StartEdge(ctx, cfg, ln, mr, log)
	if err != nil {
		enc.Close()
		return errors.Join(err, stopRegistry(context.Background()))
	}
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	if err := metrics.Serve(actx, *pf.Admin, metrics.Handler(mr, metrics.NATSReady(rnc), metrics.NATSReady(enc)), log); err != nil {
		return errors.Join(err, stopEdge(context.Background()), stopRegistry(context.Background()))
	}
	scheme := "ws"
	if *ef.TLSCert != "" {
		scheme = "wss"
	}
	page := strings.Replace(scheme, "ws", "http", 1)
	fmt.Fprintf(os.Stderr, "signal: demo page %s://%s/   WebSocket clients %s://%s/   NATS %s\n", page, displayAddr(ln.Addr()), scheme, displayAddr(ln.Addr()), url)

	select {
	case <-ctx.Done():
		log.Info("signal received; shutting down", "timeout", shutdownTimeout.String())
	case err = <-serveErr:
		log.Error("edge stopped serving", "err", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer scancel()
	// Order: the edge first (its clients' names are released through the
	// registry), then the registry; the NATS server last (deferred above).
	return errors.Join(err, stopEdge(sctx), stopRegistry(sctx))
}

func displayAddr(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if ok && ta.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", ta.Port)
	}
	return a.String()
}
