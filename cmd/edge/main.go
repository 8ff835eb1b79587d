// Command edge serves WebSocket signaling clients on one node of a cluster:
// it connects to NATS (-nats or NATS_URL) and relies on a registry service
// running somewhere in the cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/natsrtc/signal/cmd/internal/run"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/wire"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("edge", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: edge [flags]\n\nServes WebSocket signaling clients; routes through NATS.\nEvery flag can also be set by the environment variable named in its description.\n\n")
		fs.PrintDefaults()
	}
	natsURL := cli.NATS(fs)
	auth := cli.AddNATSAuth(fs)
	shutdownTimeout := cli.Duration(fs, "shutdown-timeout", "SIGNAL_SHUTDOWN_TIMEOUT", run.DefaultShutdownTimeout, "bound on a graceful stop")
	ef := run.AddEdgeFlags(fs)
	sf := run.AddSecurityFlags(fs)
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

	id, instance := ef.Identity()
	nc, err := run.Connect(ctx, *natsURL, wire.EdgeConnName(id, instance), auth, log)
	if err != nil {
		return err
	}
	ln, err := ef.Listener()
	if err != nil {
		nc.Close()
		return err
	}
	cfg, err := ef.Config(nc, id, instance, log)
	if err == nil {
		err = sf.Apply(&cfg)
	}
	if err != nil {
		nc.Close()
		return err
	}
	cfg.Listen = ln.Addr().String()
	mr := metrics.NewRegistry()
	stop, serveErr, err := run.StartEdge(ctx, cfg, ln, mr, log)
	if err != nil {
		nc.Close()
		return err
	}
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	if err := metrics.Serve(actx, *pf.Admin, metrics.Handler(mr, metrics.NATSReady(nc)), log); err != nil {
		return errors.Join(err, stop(context.Background()))
	}
	select {
	case <-ctx.Done():
		log.Info("signal received; shutting down", "timeout", shutdownTimeout.String())
	case err = <-serveErr:
		log.Error("stopped serving", "err", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer scancel()
	return errors.Join(err, stop(sctx))
}
