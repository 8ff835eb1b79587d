// Package auth verifies the JSON Web Token (RFC 7519) that a client presents
// when it opens the signaling WebSocket, and tells the edge which login name
// the token grants.
//
// Parsing and signature verification are done by github.com/golang-jwt/jwt/v5;
// this package only chooses keys and algorithms, and enforces the claims.
//
// # Keys and algorithms
//
// A [Verifier] has exactly one key source (see [Config]):
//
//   - an HMAC secret: tokens must be signed with HS256, HS384 or HS512;
//   - PEM public keys (RSA and/or Ed25519): RS256/384/512 and PS256/384/512
//     for RSA keys, EdDSA for Ed25519 keys. A token's "kid" header is ignored:
//     each key of the type its algorithm needs is tried;
//   - a JWKS document (RFC 7517) of RSA and OKP/Ed25519 keys: the token's
//     "kid" header selects the key. A token without a "kid" is accepted only
//     when the set holds exactly one usable key.
//
// The algorithm is never trusted from the token alone: "none" is always
// rejected, HMAC algorithms are rejected for public-key verifiers (the
// classic "HS256 signed with the RSA public key" confusion), and an algorithm
// must match the selected key's type (and the JWK's "alg", when it has one).
//
// # Claims
//
// "exp" is required. "nbf" and "iat" are checked when present ("iat" must not
// lie in the future). All three allow [Config.Leeway] of clock skew. "iss" and
// "aud" are required when [Config.Issuer] and [Config.Audience] are set. The
// name claim ([Config.NameClaim], "sub" by default) must be a non-empty JSON
// string; it is returned as is, so the caller still validates it as a login
// name (services/names). Tokens with a "crit" header are rejected, since no
// JWS extension is understood.
package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults and limits.
const (
	// DefaultNameClaim is the claim that carries the login name when
	// Config.NameClaim is empty.
	DefaultNameClaim = "sub"
	// DefaultLeeway is the clock skew allowed when Config.Leeway is zero.
	DefaultLeeway = 30 * time.Second
	// MaxTokenLen is the longest token Verify looks at, in bytes. Longer
	// tokens are rejected before any decoding.
	MaxTokenLen = 16 << 10
	// MinHMACSecretLen is the shortest accepted HMAC secret in bytes
	// (RFC 7518 §3.2: a key at least as long as the SHA-256 output).
	MinHMACSecretLen = 32
	// MinRSABits is the smallest accepted RSA modulus.
	MinRSABits = 2048
)

// Errors returned by Verify. Every rejection wraps exactly one of them; a
// rejection by the JWT library also wraps the library's error (for example
// jwt.ErrTokenExpired), so both errors.Is checks work.
var (
	// ErrNoToken is returned by Verify for an empty token.
	ErrNoToken = errors.New("auth: no token")
	// ErrInvalidToken is returned by Verify for a token that is malformed,
	// badly signed, expired, not yet valid, for another issuer or audience,
	// or without a usable name claim.
	ErrInvalidToken = errors.New("auth: invalid token")
)

// Config selects how tokens are verified. Exactly one key source
// (HMACSecret, PublicKeysPEM or JWKS) must be set.
type Config struct {
	// HMACSecret is a shared secret of at least MinHMACSecretLen bytes for
	// HS256, HS384 and HS512.
	HMACSecret []byte
	// PublicKeysPEM holds one or more PEM blocks, each an RSA or Ed25519
	// public key: "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY" (PKCS #1) or
	// "CERTIFICATE" (only the certificate's key is used; its validity period
	// and chain are not checked). RSA keys verify RS256/384/512 and
	// PS256/384/512 and must have at least MinRSABits; Ed25519 keys verify
	// EdDSA. Any other block type is an error.
	PublicKeysPEM []byte
	// JWKS is a JSON Web Key Set document {"keys":[...]}. Keys with kty "RSA"
	// (n, e) and kty "OKP" with crv "Ed25519" (x) are used; keys of other
	// types or curves and keys whose "use" is not "sig" are skipped. A key's
	// "alg", when present, restricts it to that algorithm. Kids must be
	// unique, and at least one key must be usable. Private key members ("d")
	// are an error.
	JWKS []byte
	// Issuer, when non-empty, must equal the token's "iss".
	Issuer string
	// Audience, when non-empty, must be among the token's "aud".
	Audience string
	// NameClaim is the claim that holds the login name; zero: "sub".
	NameClaim string
	// Leeway is the clock skew allowed for exp, nbf and iat; zero:
	// DefaultLeeway (30s); negative: none.
	Leeway time.Duration
	// Now returns the current time; zero: time.Now. For tests.
	Now func() time.Time
}

// Verifier checks tokens against one Config. It is safe for concurrent use.
type Verifier struct {
	parser    *jwt.Parser
	nameClaim string
	secret    []byte // HMAC mode
	keys      []pubKey
	jwks      bool // keys came from a JWKS: select by kid
}

// pubKey is one verification key: *rsa.PublicKey or ed25519.PublicKey.
type pubKey struct {
	kid string // JWKS only
	alg string // JWKS "alg" restriction, or ""
	key any
}

var (
	hmacAlgs = []string{"HS256", "HS384", "HS512"}
	rsaAlgs  = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	edAlgs   = []string{"EdDSA"}
)

// New checks cfg and returns a Verifier for it. It fails when no key source
// or more than one is set, when a key cannot be parsed or is of an
// unsupported type, or when a key is too weak (see MinHMACSecretLen and
// MinRSABits).
func New(cfg Config) (*Verifier, error) {
	sources := 0
	for _, s := range [][]byte{cfg.HMACSecret, cfg.PublicKeysPEM, cfg.JWKS} {
		if len(s) > 0 {
			sources++
		}
	}
	switch sources {
	case 0:
		return nil, errors.New("auth: no key source: set one of HMACSecret, PublicKeysPEM and JWKS")
	case 1:
	default:
		return nil, errors.New("auth: more than one key source: set only one of HMACSecret, PublicKeysPEM and JWKS")
	}

	v := &Verifier{nameClaim: cfg.NameClaim}
	if v.nameClaim == "" {
		v.nameClaim = DefaultNameClaim
	}

	var methods []string
	switch {
	case len(cfg.HMACSecret) > 0:
		if len(cfg.HMACSecret) < MinHMACSecretLen {
			return nil, fmt.Errorf("auth: HMAC secret is %d bytes, need at least %d", len(cfg.HMACSecret), MinHMACSecretLen)
		}
		v.secret = append([]byte(nil), cfg.HMACSecret...)
		methods = hmacAlgs
	default:
		var err error
		if len(cfg.PublicKeysPEM) > 0 {
			v.keys, err = parsePEMKeys(cfg.PublicKeysPEM)
		} else {
			v.keys, err = parseJWKS(cfg.JWKS)
			v.jwks = true
		}
		if err != nil {
			return nil, err
		}
		var hasRSA, hasEd bool
		for _, k := range v.keys {
			switch k.key.(type) {
			case *rsa.PublicKey:
				hasRSA = true
			case ed25519.PublicKey:
				hasEd = true
			}
		}
		if hasRSA {
			methods = append(methods, rsaAlgs...)
		}
		if hasEd {
			methods = append(methods, edAlgs...)
		}
	}

	leeway := cfg.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		leeway = 0
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		// Canonical base64 only: a signature segment has one spelling.
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Verify checks a raw token (the compact JWS "header.payload.signature") and
// returns the name it grants: the value of the name claim, a non-empty
// string.
//
// The signature must verify with an algorithm allowed for the configured key
// type (never "none"; never HMAC for public keys), "exp" must be present and
// not passed, "nbf" and "iat" (if present) must not lie in the future, and
// "iss" and "aud" must match when configured; see the package comment.
//
// An empty token yields ErrNoToken; every other failure wraps
// ErrInvalidToken (and the JWT library's error, when it found the problem).
func (v *Verifier) Verify(token string) (name string, err error) {
	if token == "" {
		return "", ErrNoToken
	}
	if len(token) > MaxTokenLen {
		return "", fmt.Errorf("%w: token is %d bytes, limit %d", ErrInvalidToken, len(token), MaxTokenLen)
	}
	// A compact JWS is base64url and dots only. Go's base64 decoder skips
	// CR and LF, so without this check a signed token could be re-spelled
	// with line breaks inside a segment and still verify (found by
	// FuzzVerify; the input is kept in testdata/fuzz).
	for i := 0; i < len(token); i++ {
		if c := token[i]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("%w: %w: byte %#x at %d is not base64url", ErrInvalidToken, jwt.ErrTokenMalformed, c, i)
		}
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyFunc); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	raw, ok := claims[v.nameClaim]
	if !ok {
		return "", fmt.Errorf("%w: %w: name claim %q is missing", ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing, v.nameClaim)
	}
	name, ok = raw.(string)
	if !ok {
		return "", fmt.Errorf("%w: %w: name claim %q is not a string", ErrInvalidToken, jwt.ErrInvalidType, v.nameClaim)
	}
	if name == "" {
		return "", fmt.Errorf("%w: %w: name claim %q is empty", ErrInvalidToken, jwt.ErrTokenInvalidClaims, v.nameClaim)
	}
	return name, nil
}

// keyFunc picks the verification key(s) for a parsed but unverified token.
// The parser has already checked that the algorithm is one of the allowed
// methods.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New(`unsupported "crit" header`)
	}
	if v.secret != nil {
		return v.secret, nil
	}
	alg := t.Method.Alg()
	kid, hasKid := "", false
	if raw, ok := t.Header["kid"]; ok {
		s, ok := raw.(string)
		if !ok {
			return nil, errors.New(`"kid" header is not a string`)
		}
		kid, hasKid = s, true
	}

	if v.jwks {
		var k *pubKey
		switch {
		case hasKid:
			for i := range v.keys {
				if v.keys[i].kid == kid {
					k = &v.keys[i]
					break
				}
			}
			if k == nil {
				return nil, fmt.Errorf("no key with kid %q", kid)
			}
		case len(v.keys) == 1:
			k = &v.keys[0]
		default:
			return nil, fmt.Errorf(`token has no "kid" and the key set has %d keys`, len(v.keys))
		}
		if !k.allows(alg) {
			return nil, fmt.Errorf("key %q does not allow algorithm %s", k.kid, alg)
		}
		return k.key, nil
	}

	var set []jwt.VerificationKey
	for i := range v.keys {
		if v.keys[i].allows(alg) {
			set = append(set, v.keys[i].key)
		}
	}
	switch len(set) {
	case 0:
		return nil, fmt.Errorf("no key for algorithm %s", alg)
	case 1:
		return set[0], nil
	}
	return jwt.VerificationKeySet{Keys: set}, nil
}

// allows reports whether k may verify a signature made with alg.
func (k *pubKey) allows(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch k.key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// TokenFromRequest returns the token r carries: the credentials of an
// "Authorization: Bearer <token>" header (scheme matched case-insensitively)
// if there is one, otherwise the "token" query parameter, since browsers
// cannot set headers on a WebSocket upgrade. Other Authorization schemes
// (such as Basic) are ignored. It returns "" when r carries no token.
//
// Tokens in URLs end up in access logs and browser history: keep them
// short-lived.
func TokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			if t := strings.TrimSpace(cred); t != "" {
				return t
			}
		}
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.Query().Get("token")
}
