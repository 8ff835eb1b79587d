package run

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/natsrtc/signal/edge"
	"github.com/natsrtc/signal/services/auth"
	"github.com/natsrtc/signal/services/cli"
	"github.com/natsrtc/signal/services/turn"
)

// SecurityFlags turn on authentication and TURN credentials.
type SecurityFlags struct {
	HMACFile, KeysFile, JWKSFile, Issuer, Audience, Claim *string
	TURNSecret, TURNURLs                                  *string
	TURNTTL                                               *time.Duration
}

// AddSecurityFlags defines the authentication and TURN flags on fs.
func AddSecurityFlags(fs *flag.FlagSet) *SecurityFlags {
	return &SecurityFlags{
		HMACFile:   cli.String(fs, "auth-hmac-file", "SIGNAL_AUTH_HMAC_FILE", "", "file holding the HS256 shared secret (at least 32 bytes): require a JWT on every connection"),
		KeysFile:   cli.String(fs, "auth-keys", "SIGNAL_AUTH_KEYS", "", "PEM file of RSA or Ed25519 public keys: require a JWT on every connection"),
		JWKSFile:   cli.String(fs, "auth-jwks", "SIGNAL_AUTH_JWKS", "", "JWKS file of public keys: require a JWT on every connection"),
		Issuer:     cli.String(fs, "auth-issuer", "SIGNAL_AUTH_ISSUER", "", "required JWT issuer (iss)"),
		Audience:   cli.String(fs, "auth-audience", "SIGNAL_AUTH_AUDIENCE", "", "required JWT audience (aud)"),
		Claim:      cli.String(fs, "auth-claim", "SIGNAL_AUTH_CLAIM", auth.DefaultNameClaim, "JWT claim that holds the name the client may log in with"),
		TURNSecret: cli.String(fs, "turn-secret", "SIGNAL_TURN_SECRET", "", "TURN REST shared secret (coturn static-auth-secret): login replies carry iceServers with time-limited credentials"),
		TURNURLs:   cli.String(fs, "turn-urls", "SIGNAL_TURN_URLS", "", "TURN/STUN URLs for iceServers, comma separated (e.g. turn:turn.example.com:3478)"),
		TURNTTL:    cli.Duration(fs, "turn-ttl", "SIGNAL_TURN_TTL", turn.DefaultTTL, "lifetime of TURN credentials"),
	}
}

// Apply sets the edge's Auth and ICEServers from the flags.
func (f *SecurityFlags) Apply(cfg *edge.Config) error {
	var ac auth.Config
	sources := 0
	for _, src := range []struct {
		file string
		dst  *[]byte
	}{{*f.HMACFile, &ac.HMACSecret}, {*f.KeysFile, &ac.PublicKeysPEM}, {*f.JWKSFile, &ac.JWKS}} {
		if src.file == "" {
			continue
		}
		b, err := os.ReadFile(src.file)
		if err != nil {
			return err
		}
		*src.dst = b
		sources++
	}
	if sources > 1 {
		return fmt.Errorf("use one of -auth-hmac-file, -auth-keys and -auth-jwks")
	}
	if sources == 1 {
		ac.Issuer, ac.Audience, ac.NameClaim = *f.Issuer, *f.Audience, *f.Claim
		if len(ac.HMACSecret) > 0 {
			ac.HMACSecret = trimNewline(ac.HMACSecret)
		}
		v, err := auth.New(ac)
		if err != nil {
			return err
		}
		cfg.Auth = jwtAuth{v}
	}
	if *f.TURNSecret != "" || *f.TURNURLs != "" {
		urls := splitList(*f.TURNURLs)
		if len(urls) == 0 {
			return fmt.Errorf("-turn-secret needs -turn-urls")
		}
		tc := turn.Config{Secret: *f.TURNSecret, URLs: urls, TTL: *f.TURNTTL}
		cfg.ICEServers = tc.AppendJSON
	}
	return nil
}

// jwtAuth adapts an auth.Verifier to edge.Authenticator.
type jwtAuth struct{ v *auth.Verifier }

func (a jwtAuth) Authenticate(r *http.Request) (string, error) {
	tok := auth.TokenFromRequest(r)
	if tok == "" {
		return "", auth.ErrNoToken
	}
	return a.v.Verify(tok)
}

var _ edge.Authenticator = jwtAuth{}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
