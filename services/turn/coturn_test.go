package turn_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"

	"github.com/natsrtc/signal/services/proctest"
	"github.com/natsrtc/signal/services/turn"
)

// TestCoturnAcceptsCredentials starts coturn's turnserver on a loopback port
// with the example configuration and allocates relays with pion's TURN
// client: generated credentials must be accepted for login names of every
// kind (including those Credentials hashes), wrong, tampered and expired
// ones rejected with 401.
//
// It skips when turnserver is not installed (Debian package "coturn"),
// except under CI=true, where it fails.
func TestCoturnAcceptsCredentials(t *testing.T) {
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("turnserver not found (install the Debian package coturn): %v", err)
		}
		t.Skipf("turnserver not found (install the Debian package coturn): %v", err)
	}

	const secret = "integration-test-secret"
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	startCoturn(t, bin, port, secret)

	cfg := turn.Config{
		Secret: secret,
		URLs:   []string{"stun:" + addr, "turn:" + addr + "?transport=udp"},
		TTL:    time.Hour,
	}
	creds := func(c turn.Config, name string) turn.ICEServer {
		servers := c.Credentials(name)
		if len(servers) != 2 || servers[1].Username == "" {
			t.Fatalf("Credentials(%q) = %#v, want a stun entry and a turn entry with credentials", name, servers)
		}
		return servers[1]
	}
	good := creds(cfg, "alice")
	if got := turnAddr(t, good.URLs[0]); got != addr {
		t.Fatalf("turn URL address %q, want %q", got, addr)
	}
	expiredCfg := cfg
	expiredCfg.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired := creds(expiredCfg, "alice")
	otherSecret := cfg
	otherSecret.Secret = "not-the-secret"
	wrong := creds(otherSecret, "alice")

	// rawUnsafe is what a verbatim name with a space would give: coturn
	// drops such requests without answering, which is why Credentials
	// hashes these names.
	rawUnsafe := good.Username + " smith"

	tests := []struct {
		name     string
		username string
		password string
		ok       bool
		dropped  bool // coturn does not answer at all (instead of 401)
	}{
		{name: "generated credentials", username: good.Username, password: good.Credential, ok: true},
		{name: "longest login name", username: creds(cfg, strings.Repeat("n", 256)).Username, password: creds(cfg, strings.Repeat("n", 256)).Credential, ok: true},
		{name: "credential from another secret", username: wrong.Username, password: wrong.Credential},
		{name: "credential of another name", username: strings.Replace(good.Username, ":alice", ":mallory", 1), password: good.Credential},
		{name: "garbage credential", username: good.Username, password: "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
		{name: "expired credential", username: expired.Username, password: expired.Credential},
		{name: "username without expiry", username: "alice", password: turn.Credential(secret, "alice")},
		{name: "verbatim name with a space is dropped", username: rawUnsafe, password: turn.Credential(secret, rawUnsafe), dropped: true},
	}
	// Login names of every kind, verbatim or hashed, must be accepted.
	for _, name := range []string{
		"bob:李雷🙂", "a.b*>/=", "#hash-lookalike", "union", "with space", `quote"s`, "it's", `back\slash`,
		"tab\tname", "Union Select", "unionselect", strings.Repeat("é", 129),
	} {
		s := creds(cfg, name)
		tests = append(tests, struct {
			name     string
			username string
			password string
			ok       bool
			dropped  bool
		}{name: fmt.Sprintf("login name %.24q", name), username: s.Username, password: s.Credential, ok: true})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rto := time.Duration(0) // pion's default
			if tc.dropped {
				rto = 10 * time.Millisecond // give up after ~1.3s
			}
			relay, err := allocate(addr, tc.username, tc.password, rto)
			switch {
			case tc.ok:
				if err != nil {
					t.Fatalf("allocate as %q: %v", tc.username, err)
				}
				if !strings.HasPrefix(relay, "127.0.0.1:") {
					t.Fatalf("relayed address %q, want one on 127.0.0.1", relay)
				}
				return
			case err == nil:
				t.Fatalf("allocate as %q succeeded (relay %s), want failure", tc.username, relay)
			case tc.dropped:
				t.Logf("allocate as %q: %v", tc.username, err)
				return
			}
			var te *stun.TurnError
			if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeUnauthorized {
				t.Fatalf("allocate as %q: error %v, want a 401 TURN error", tc.username, err)
			}
		})
	}
}

// allocate runs a TURN Allocate as username/password against addr and
// returns the relayed address. rto is the client's first retransmission
// timeout (zero: pion's default).
func allocate(addr, username, password string, rto time.Duration) (string, error) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Username:       username,
		Password:       password,
		Conn:           conn,
		RTO:            rto,
		LoggerFactory:  lf,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		return "", err
	}
	relay, err := c.Allocate()
	if err != nil {
		return "", err
	}
	defer func() { _ = relay.Close() }()
	return relay.LocalAddr().String(), nil
}

// startCoturn runs turnserver with the example configuration, adapted to a
// loopback test: its port, the test secret, loopback listener and relay
// addresses, and pid and database files in a temporary directory. It
// returns once the server answers a STUN binding request.
func startCoturn(t *testing.T, bin string, port int, secret string) {
	t.Helper()
	dir := t.TempDir()
	conf := coturnConfig
	for old, repl := range map[string]string{
		"listening-port=3478\n":          fmt.Sprintf("listening-port=%d\n", port),
		"static-auth-secret=change-me\n": "static-auth-secret=" + secret + "\n",
		"# listening-ip=0.0.0.0\n":       "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\n",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("example coturn config lacks %q", old)
		}
		conf = strings.Replace(conf, old, repl, 1)
	}
	conf += fmt.Sprintf("pidfile=%s\nuserdb=%s\n", filepath.Join(dir, "turnserver.pid"), filepath.Join(dir, "turndb"))
	confPath := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	out := &syncBuffer{}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start turnserver: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("turnserver config:\n%s\nturnserver output:\n%s", conf, out.String())
		}
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("turnserver exited early: %v\n%s", err, out.String())
		default:
		}
		if err := stunBinding(addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("turnserver did not answer STUN binding on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stunBinding sends one STUN binding request to addr and waits briefly for
// the success response.
func stunBinding(addr string) error {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(req.Raw); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	res := &stun.Message{Raw: buf[:n]}
	if err := res.Decode(); err != nil {
		return err
	}
	if res.Type != stun.BindingSuccess || res.TransactionID != req.TransactionID {
		return fmt.Errorf("unexpected STUN response %v", res.Type)
	}
	return nil
}

// freePort returns a loopback port that is free for both UDP and TCP
// (turnserver listens on both).
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = pc.Close()
		if err != nil {
			continue
		}
		_ = l.Close()
		return port
	}
	t.Fatal("no free UDP+TCP port on 127.0.0.1")
	return 0
}

// turnAddr extracts host:port from a turn: URL such as
// "turn:127.0.0.1:3478?transport=udp".
func turnAddr(t *testing.T, u string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(u, "turn:")
	if !ok {
		t.Fatalf("not a turn: URL: %q", u)
	}
	hostPort, _, _ := strings.Cut(rest, "?")
	return hostPort
}

// syncBuffer collects a child process's output.
type syncBuffer = proctest.Buffer
