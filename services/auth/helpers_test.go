package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testNow is the fixed clock of every test verifier.
var testNow = time.Unix(1_700_000_000, 0)

func fixedNow() time.Time { return testNow }

// testSecret is a 40-byte HMAC secret.
var testSecret = []byte("test-secret-0123456789-abcdefghijklmnopq")

// Keys are made once per test binary: 2048-bit RSA generation is slow under
// -race. Ed25519 keys come from fixed seeds so fuzz corpus entries signed
// with them stay meaningful across runs.
var (
	rsaKeyA = sync.OnceValue(func() *rsa.PrivateKey { return genRSA(2048) })
	rsaKeyB = sync.OnceValue(func() *rsa.PrivateKey { return genRSA(2048) })
	edKeyA  = ed25519.NewKeyFromSeed([]byte("ed25519 test seed A, 32 bytes!!!"))
	edKeyB  = ed25519.NewKeyFromSeed([]byte("ed25519 test seed B, 32 bytes!!!"))
)

func genRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

// pemPKIX encodes pub as a "PUBLIC KEY" block.
func pemPKIX(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// pemPKCS1 encodes pub as an "RSA PUBLIC KEY" block.
func pemPKCS1(pub *rsa.PublicKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)})
}

// pemCert encodes a self-signed certificate for priv as a "CERTIFICATE" block.
func pemCert(tb testing.TB, priv *rsa.PrivateKey) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer.test"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rsaJWK and edJWK build JWKS members by hand (base64url n/e/x).
func rsaJWK(kid string, pub *rsa.PublicKey) map[string]any {
	e := big.NewInt(int64(pub.E)).Bytes()
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": b64u(pub.N.Bytes()), "e": b64u(e)}
}

func edJWK(kid string, pub ed25519.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(pub)}
}

func jwksDoc(tb testing.TB, keys ...map[string]any) []byte {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// claims returns a valid claim set for "alice" at testNow, changed by mods
// (a nil value deletes the claim).
func claims(mods map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"iss": "https://issuer.test",
		"aud": "signal",
		"iat": testNow.Add(-time.Minute).Unix(),
		"exp": testNow.Add(time.Hour).Unix(),
	}
	for k, v := range mods {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// mint signs c with method and key, adding header fields (a nil value
// deletes the header field).
func mint(tb testing.TB, method jwt.SigningMethod, key any, c jwt.MapClaims, header map[string]any) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, c)
	for k, v := range header {
		if v == nil {
			delete(t.Header, k)
		} else {
			t.Header[k] = v
		}
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustNew(tb testing.TB, cfg Config) *Verifier {
	tb.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedNow
	}
	v, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

type ed25519PublicKey = ed25519.PublicKey

func x509MarshalPKCS8(key any) ([]byte, error) { return x509.MarshalPKCS8PrivateKey(key) }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
