// Command registry runs the registry service: the only writer of who is
// online, keeping usernames unique across the cluster in the JetStream KV
// bucket "users". Run as many as you like; they share the work through the
// queue group "registry".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/natsrtc/signal/cmd/internal/run"
	"github.com/natsrtc/signal/registry"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/metrics"
	"github.com/natsrtc/signal/services/natsconn"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("registry", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: registry [flags]\n\nKeeps usernames and rooms across the signaling cluster (JetStream KV buckets \"users\" and \"rooms\"), and publishes lifecycle events (stream SIGNAL_EVENTS).\nEvery flag can also be set by the environment variable named in its description.\n\n")
		fs.PrintDefaults()
	}
	natsURL := cli.NATS(fs)
	auth := cli.AddNATSAuth(fs)
	shutdownTimeout := cli.Duration(fs, "shutdown-timeout", "SIGNAL_SHUTDOWN_TIMEOUT", run.DefaultShutdownTimeout, "bound on a graceful stop")
	rf := run.AddRegistryFlags(fs, registry.DefaultReplicas)
	pf := run.AddProcessFlags(fs)
	log, err := pf.Parse(fs, os.Args[1:])
	if err != nil {
		return err
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	nc, err := run.Connect(ctx, *natsURL, "registry", auth, log)
	if err != nil {
		return err
	}
	// Creating the buckets can fail for a moment on a cluster that is still
	// forming, or when registries start together: try again until stopped.
	var reg *registry.Registry
	for {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		reg, err = registry.New(actx, rf.Config(nc, log, nil))
		acancel()
		if err == nil {
			break
		}
		log.Warn("registry not started; retrying", "err", err)
		select {
		case <-ctx.Done():
			nc.Close()
			return err
		case <-time.After(time.Second):
		}
	}
	mr := metrics.NewRegistry()
	mr.MustRegister(reg.Collectors()...)
	metrics.NATSConnected(mr, "registry", nc)
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	if err := metrics.Serve(actx, *pf.Admin, metrics.Handler(mr, metrics.NATSReady(nc)), log); err != nil {
		return errors.Join(err, reg.Stop())
	}
	<-ctx.Done()
	log.Info("signal received; shutting down", "timeout", shutdownTimeout.String())
	sctx, scancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer scancel()
	return errors.Join(reg.Stop(), natsconn.Drain(sctx, nc))
}
