// Package turn issues time-limited TURN credentials by the "TURN REST API"
// scheme (draft-uberti-behave-turn-rest-00), which coturn checks when it runs
// with use-auth-secret and static-auth-secret:
//
//	username   = "<unix expiry time>:<name>"
//	credential = base64(HMAC-SHA1(secret, username))
//
// The base64 is standard encoding with padding, as coturn computes it. coturn
// reads the expiry from the digits before the first ':', so names may
// themselves contain ':'. A credential cannot be revoked: it is valid until
// its expiry, so keep TTL short enough and rotate the secret to cut off every
// credential at once.
//
// # Names coturn refuses
//
// coturn 4.6 silently drops (does not even answer with 401) any request
// whose USERNAME contains a space, tab, CR, LF, ', " or \, or contains both
// "union" and "select" in any case (its SQL-injection filter,
// is_secure_string). Login names may contain all of these, so such names
// are not put into the username verbatim: see [Config.Credentials].
//
// The signaling server hands the result to the browser in the login reply;
// the browser passes it unchanged as RTCConfiguration.iceServers.
//
// # coturn configuration
//
// The package example (Example_coturnConfig) shows a turnserver.conf that
// accepts these credentials: use-auth-secret, and static-auth-secret equal
// to [Config.Secret]; the realm is free. The integration test runs coturn
// with exactly that file (ports and secret substituted) and allocates a
// relay with the credentials.
package turn

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTTL is the credential lifetime used when Config.TTL is zero.
const DefaultTTL = 12 * time.Hour

// MaxPlainName is the longest name (in bytes) put into a username verbatim;
// it equals the longest login name (services/names.MaxLen).
const MaxPlainName = 256

// Config describes the TURN servers a client may use and the shared secret
// they check credentials with.
type Config struct {
	// Secret is coturn's static-auth-secret. Empty: Credentials returns the
	// URLs without username and credential (STUN only).
	Secret string
	// URLs are the ICE server URLs, e.g. "turn:turn.example:3478?transport=udp",
	// "turns:turn.example:5349" or "stun:turn.example:3478".
	URLs []string
	// TTL is how long credentials stay valid; zero or negative: DefaultTTL.
	TTL time.Duration
	// Now returns the current time; zero: time.Now. For tests.
	Now func() time.Time
}

// ICEServer is one entry of RTCConfiguration.iceServers as browsers take it.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Credentials returns the iceServers for name: one entry with the "stun:" and
// "stuns:" URLs, without credentials, if there are any, then one entry with
// every other URL ("turn:", "turns:") and the username
// "<unix expiry>:<name>" with the credential base64(HMAC-SHA1(secret,
// username)) (standard base64 with padding, as coturn computes it). The
// expiry is Now()+TTL. Each entry keeps the URLs in their configured order.
// It returns nil when c has no URLs, and leaves username and credential
// empty when c has no Secret.
//
// The name goes into the username verbatim unless coturn would refuse it
// (see the package comment) or it could be mistaken for the other form: a
// name that is empty, longer than MaxPlainName bytes, not valid UTF-8,
// starts with '#', contains a control character (U+0000–U+001F, U+007F), a
// space, ', " or \, or contains both "union" and "select" (any case) is
// replaced by '#' and the 64 lowercase hex digits of its SHA-256, e.g.
// "1735732800:#2cf24d…". Such a username stays stable for a name (for
// coturn's per-user quotas and logs), never reveals the name, and only holds
// bytes coturn accepts.
//
// The username is therefore always valid UTF-8 and at most 11+MaxPlainName
// bytes, well below STUN's 513-byte limit.
func (c Config) Credentials(name string) []ICEServer {
	var stun, relay []string
	for _, u := range c.URLs {
		if isSTUN(u) {
			stun = append(stun, u)
		} else {
			relay = append(relay, u)
		}
	}
	var out []ICEServer
	if len(stun) > 0 {
		out = append(out, ICEServer{URLs: stun})
	}
	if len(relay) > 0 {
		s := ICEServer{URLs: relay}
		if c.Secret != "" {
			s.Username, s.Credential = c.userCredential(name)
		}
		out = append(out, s)
	}
	return out
}

// AppendJSON appends the JSON array of Credentials(name) to dst (for the
// login reply) and returns the extended buffer. With no URLs it appends [].
func (c Config) AppendJSON(dst []byte, name string) []byte {
	servers := c.Credentials(name)
	if servers == nil {
		servers = []ICEServer{}
	}
	b, err := json.Marshal(servers)
	if err != nil {
		// Only strings and slices of strings: cannot fail.
		panic("turn: " + err.Error())
	}
	return append(dst, b...)
}

// userCredential returns the username and credential for name.
func (c Config) userCredential(name string) (username, credential string) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	username = strconv.FormatInt(now().Add(ttl).Unix(), 10) + ":" + userPart(name)
	return username, Credential(c.Secret, username)
}

// userPart returns name if coturn accepts it verbatim in a username, and
// otherwise '#' and the hex SHA-256 of name (which holds no letter of
// "union" or "select"). See Config.Credentials.
func userPart(name string) string {
	if plainOK(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "#" + hex.EncodeToString(sum[:])
}

// plainOK reports whether name may stand verbatim in a username.
func plainOK(name string) bool {
	if name == "" || len(name) > MaxPlainName || name[0] == '#' || !utf8.ValidString(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b < 0x20, b == 0x7f, b == ' ', b == '\'', b == '"', b == '\\':
			return false
		}
	}
	lower := strings.ToLower(name)
	return !(strings.Contains(lower, "union") && strings.Contains(lower, "select"))
}

// Credential returns base64(HMAC-SHA1(secret, username)) in standard base64
// with padding: the password coturn expects for username under
// use-auth-secret.
func Credential(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// isSTUN reports whether u is a stun: or stuns: URL (schemes are
// case-insensitive).
func isSTUN(u string) bool {
	scheme, _, ok := strings.Cut(u, ":")
	return ok && (strings.EqualFold(scheme, "stun") || strings.EqualFold(scheme, "stuns"))
}
