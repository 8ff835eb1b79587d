package turn_test

import (
	"fmt"
	"time"

	"github.com/natsrtc/signal/services/turn"
)

// coturnConfig is a minimal turnserver.conf (coturn 4.6) for local
// testing with credentials from a Config whose Secret is "change-me".
// Production needs TLS (drop no-tls, add cert/pkey and a turns: URL), a real
// realm, external-ip behind NAT, and a secret from a secret store.
const coturnConfig = `# turnserver.conf: TURN REST API credentials (services/turn)
listening-port=3478
# listening-ip=0.0.0.0
# external-ip=<public address>          # when behind NAT
realm=signal.example
# Time-limited credentials: username "<expiry>:<name>",
# password base64(HMAC-SHA1(static-auth-secret, username)).
use-auth-secret
static-auth-secret=change-me
fingerprint
# Local testing only: no TLS/DTLS listeners.
no-tls
no-dtls
no-cli
# Relay ports (open them in the firewall).
min-port=49152
max-port=65535
# Refuse multicast peers (loopback peers are refused by default).
no-multicast-peers
# denied-peer-ip=10.0.0.0-10.255.255.255 etc. for private ranges
log-file=stdout
simple-log
`

// Example_coturnConfig prints a turnserver.conf for coturn that accepts the
// credentials of a Config with the same secret. The integration test in this
// package runs coturn with this text (port, secret and loopback addresses
// substituted).
func Example_coturnConfig() {
	// Pair it with turn.Config{Secret: "change-me", URLs: []string{
	// "stun:turn.signal.example:3478",
	// "turn:turn.signal.example:3478?transport=udp"}}.
	fmt.Print(coturnConfig)
	// Output:
	// # turnserver.conf: TURN REST API credentials (services/turn)
	// listening-port=3478
	// # listening-ip=0.0.0.0
	// # external-ip=<public address>          # when behind NAT
	// realm=signal.example
	// # Time-limited credentials: username "<expiry>:<name>",
	// # password base64(HMAC-SHA1(static-auth-secret, username)).
	// use-auth-secret
	// static-auth-secret=change-me
	// fingerprint
	// # Local testing only: no TLS/DTLS listeners.
	// no-tls
	// no-dtls
	// no-cli
	// # Relay ports (open them in the firewall).
	// min-port=49152
	// max-port=65535
	// # Refuse multicast peers (loopback peers are refused by default).
	// no-multicast-peers
	// # denied-peer-ip=10.0.0.0-10.255.255.255 etc. for private ranges
	// log-file=stdout
	// simple-log
}

func ExampleConfig_Credentials() {
	cfg := turn.Config{
		Secret: "north",
		URLs:   []string{"stun:turn.example:3478", "turn:turn.example:3478?transport=udp", "turns:turn.example:5349"},
		TTL:    time.Hour,
		Now:    func() time.Time { return time.Unix(1433892318, 0) }, // a real server leaves Now nil
	}
	for _, s := range cfg.Credentials("bob") {
		fmt.Printf("%v %q %q\n", s.URLs, s.Username, s.Credential)
	}
	fmt.Println(string(cfg.AppendJSON(nil, "bob")))
	// Output:
	// [stun:turn.example:3478] "" ""
	// [turn:turn.example:3478?transport=udp turns:turn.example:5349] "1433895918:bob" "+qCJxktJhPsEAA0wfh7NCKO+G0M="
	// [{"urls":["stun:turn.example:3478"]},{"urls":["turn:turn.example:3478?transport=udp","turns:turn.example:5349"],"username":"1433895918:bob","credential":"+qCJxktJhPsEAA0wfh7NCKO+G0M="}]
}
