// Package embed runs a NATS server with JetStream inside the process: the
// all-in-one signal binary listens with it on 127.0.0.1:4222 so that the nats
// CLI works at once, and tests run one on a random port.
//
// The server has the accounts of a production cluster in miniature: every
// client that presents no credentials is the user "signal" of the account
// SIGNAL (JetStream enabled), and the system account SYS exports the
// account's connection events, which SIGNAL imports with the prefix "sys"
// (subject.DisconnectEvents): the registry learns at once that an edge's
// connection closed, as it does on the deploy/nats cluster.
package embed

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config of the embedded server. Zero values select the defaults beside them.
type Config struct {
	// Listen is host:port for NATS clients. Zero: "127.0.0.1:4222".
	// Port 0 or -1 picks a free port.
	Listen string
	// StoreDir is the JetStream store. Zero: a new directory under os.TempDir,
	// which is not removed (so a restart with the same directory keeps state).
	StoreDir string
	// Logs turns the server's own log on (stderr).
	Logs bool
	// ReadyTimeout bounds the wait for the server to accept clients.
	// Zero: 10s.
	ReadyTimeout time.Duration
	// MaxControlLine is the longest control line (a publish's subject and
	// reply) the server accepts. Zero: the server's default, 4 KiB.
	MaxControlLine int32
}

// accounts is the embedded server's account configuration (see the package
// documentation).
const accounts = `
accounts {
  SIGNAL {
    jetstream: enabled
    users: [{user: signal, password: ""}]
    imports: [{stream: {account: SYS, subject: "$SYS.ACCOUNT.SIGNAL.DISCONNECT"}, prefix: sys}]
  }
  SYS {
    exports: [{stream: "$SYS.ACCOUNT.SIGNAL.DISCONNECT"}]
  }
}
system_account: SYS
no_auth_user: signal
`

// Start starts a NATS server with JetStream and waits until it accepts
// clients. The caller owns it: call Shutdown and WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embed: listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embed: listen %q: %w", listen, err)
	}
	if port == 0 {
		port = -1
	}
	dir := cfg.StoreDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "signal-jetstream-"); err != nil {
			return nil, fmt.Errorf("embed: %w", err)
		}
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(accounts); err != nil {
		return nil, fmt.Errorf("embed: accounts: %w", err)
	}
	opts.ServerName = "signal"
	opts.Host = host
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = dir
	opts.NoLog = !cfg.Logs
	opts.NoSigs = true
	opts.MaxControlLine = cfg.MaxControlLine
	// Signaling frames are small, but a 64 KiB SDP frame plus headers must
	// fit; the default 1 MiB is kept.
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	if cfg.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	rt := cfg.ReadyTimeout
	if rt == 0 {
		rt = 10 * time.Second
	}
	if !s.ReadyForConnections(rt) {
		s.Shutdown()
		return nil, errors.New("embed: NATS server not ready in time (is the port taken?)")
	}
	return s, nil
}
