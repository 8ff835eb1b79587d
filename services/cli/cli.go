// Package cli holds the flag plumbing the service binaries share: every flag
// has an environment fallback, and -h names both with the default.
package cli

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// DefaultNATSURL is used when neither -nats nor NATS_URL is set.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// String defines a string flag whose default comes from the environment
// variable env when it is set, else def.
func String(fs *flag.FlagSet, name, env, def, usage string) *string {
	v := def
	if e, ok := os.LookupEnv(env); ok {
		v = e
	}
	return fs.String(name, v, help(usage, env))
}

// Int is String for ints. A malformed environment value is reported at once.
func Int(fs *flag.FlagSet, name, env string, def int, usage string) *int {
	v := def
	if e, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(e)
		if err != nil {
			fatalf("%s=%q: %v", env, e, err)
		}
		v = n
	}
	return fs.Int(name, v, help(usage, env))
}

// Int64 is String for int64s.
func Int64(fs *flag.FlagSet, name, env string, def int64, usage string) *int64 {
	v := def
	if e, ok := os.LookupEnv(env); ok {
		n, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			fatalf("%s=%q: %v", env, e, err)
		}
		v = n
	}
	return fs.Int64(name, v, help(usage, env))
}

// Duration is String for durations ("10s", "1m30s").
func Duration(fs *flag.FlagSet, name, env string, def time.Duration, usage string) *time.Duration {
	v := def
	if e, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(e)
		if err != nil {
			fatalf("%s=%q: %v", env, e, err)
		}
		v = d
	}
	return fs.Duration(name, v, help(usage, env))
}

// Bool is String for booleans.
func Bool(fs *flag.FlagSet, name, env string, def bool, usage string) *bool {
	v := def
	if e, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(e)
		if err != nil {
			fatalf("%s=%q: %v", env, e, err)
		}
		v = b
	}
	return fs.Bool(name, v, help(usage, env))
}

// NATS defines the -nats flag every service binary takes.
func NATS(fs *flag.FlagSet) *string {
	return String(fs, "nats", "NATS_URL", DefaultNATSURL, "NATS server URL(s), comma separated")
}

// LogLevel defines -log-level and returns a function that builds the logger.
func LogLevel(fs *flag.FlagSet) func() *slog.Logger {
	lvl := String(fs, "log-level", "SIGNAL_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	return func() *slog.Logger {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*lvl)); err != nil {
			fatalf("-log-level %q: %v", *lvl, err)
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
}

// help adds the environment variable to a flag's usage; flag prints the
// default itself.
func help(usage, env string) string { return fmt.Sprintf("%s (env %s)", usage, env) }

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// NATSAuth are the flags for NATS credentials and TLS that every service
// binary takes.
type NATSAuth struct {
	User, Password, Creds, NKey, CA, Cert, Key *string
}

// AddNATSAuth defines the credential and TLS flags.
func AddNATSAuth(fs *flag.FlagSet) *NATSAuth {
	return &NATSAuth{
		User:     String(fs, "nats-user", "NATS_USER", "", "NATS user name"),
		Password: String(fs, "nats-password", "NATS_PASSWORD", "", "NATS password"),
		Creds:    String(fs, "nats-creds", "NATS_CREDS", "", "NATS credentials file (JWT and seed)"),
		NKey:     String(fs, "nats-nkey", "NATS_NKEY", "", "NATS nkey seed file"),
		CA:       String(fs, "nats-ca", "NATS_CA", "", "CA certificate file to verify the NATS servers (turns TLS on)"),
		Cert:     String(fs, "nats-cert", "NATS_CERT", "", "client certificate file for NATS TLS"),
		Key:      String(fs, "nats-key", "NATS_KEY", "", "client key file for NATS TLS"),
	}
}
