package auth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify feeds arbitrary strings to three verifiers (HMAC, a PEM bundle
// of an RSA and an Ed25519 key, and a JWKS). Verify must never panic, must
// reject with ErrNoToken or ErrInvalidToken, and may accept only a token
// that is exactly one of the validly signed seeds for that verifier (same
// header, payload and signature segment), returning that seed's name. Any
// mutation of a valid token that still verified would be a forgery or a
// malleable signature encoding.
func FuzzVerify(f *testing.F) {
	rsaA := rsaKeyA()
	verifiers := []*Verifier{
		mustNew(f, Config{HMACSecret: testSecret, Issuer: "https://issuer.test", Audience: "signal"}),
		mustNew(f, Config{PublicKeysPEM: append(pemPKIX(f, &rsaA.PublicKey), pemPKIX(f, edKeyA.Public())...)}),
		mustNew(f, Config{JWKS: jwksDoc(f, rsaJWK("rsa1", &rsaA.PublicKey), edJWK("ed1", edKeyB.Public().(ed25519PublicKey)))}),
	}
	// valid[i] maps each validly signed seed of verifier i to its name.
	valid := make([]map[string]string, len(verifiers))
	for i := range valid {
		valid[i] = map[string]string{}
	}
	// addValid mints a seed that exactly the verifiers in accept must
	// accept (the PEM verifier ignores kid, so it also takes the JWKS RSA
	// token), and records it as valid for them.
	addValid := func(method jwt.SigningMethod, key any, c jwt.MapClaims, header map[string]any, accept ...int) string {
		tok := mint(f, method, key, c, header)
		for i, v := range verifiers {
			name, err := v.Verify(tok)
			want := slices.Contains(accept, i)
			if (err == nil) != want {
				f.Fatalf("seed %q: verifier %d error = %v, want accepted=%v", tok, i, err, want)
			}
			if want {
				valid[i][tok] = name
			}
		}
		f.Add(tok)
		return tok
	}
	kid := func(k string) map[string]any { return map[string]any{"kid": k} }

	hs := addValid(jwt.SigningMethodHS256, testSecret, claims(nil), nil, 0)
	addValid(jwt.SigningMethodHS512, testSecret, claims(map[string]any{"sub": "bob", "nbf": testNow.Unix()}), nil, 0)
	rs := addValid(jwt.SigningMethodRS256, rsaA, claims(nil), nil, 1)
	addValid(jwt.SigningMethodPS384, rsaA, claims(map[string]any{"sub": "carol"}), nil, 1)
	ed := addValid(jwt.SigningMethodEdDSA, edKeyA, claims(map[string]any{"sub": "李雷"}), nil, 1)
	addValid(jwt.SigningMethodRS256, rsaA, claims(map[string]any{"sub": "dave"}), kid("rsa1"), 1, 2)
	addValid(jwt.SigningMethodEdDSA, edKeyB, claims(map[string]any{"sub": "🙂"}), kid("ed1"), 2)

	seg := func(s string) string { return b64u([]byte(s)) }
	sigOf := func(tok string) string { return tok[strings.LastIndexByte(tok, '.')+1:] }
	hostile := []string{
		"", ".", "..", "...", "a.b.c", "not a token",
		strings.Repeat(".", 1000),
		strings.Repeat("A", MaxTokenLen+1),
		strings.Repeat("eyJhbGciOiJIUzI1NiJ9.", 3),
		"eyJhbGciOiJIUzI1NiJ9.eyJ.!!!!",
		"eyJ.eyJ.eyJ",
		seg(`{"alg":"none"}`) + "." + seg(`{"sub":"alice","exp":1800000000}`) + ".",
		seg(`{"alg":"none","alg":"HS256"}`) + "." + seg(`{"sub":"alice","exp":1800000000}`) + ".",
		seg(`{"alg":"HS256","kid":{"a":[1,2,3]}}`) + "." + seg(`{"sub":"alice","exp":1800000000}`) + "." + sigOf(hs),
		seg(`{"alg":"RS256","kid":null}`) + "." + seg(`{"sub":"alice","exp":1e308}`) + "." + sigOf(rs),
		seg(`{"alg":"EdDSA","crit":["b64"],"b64":false}`) + "." + seg(`{"sub":"alice","exp":1e999}`) + "." + sigOf(ed),
		seg(`{"alg":"HS256"}`) + "." + seg(`{"sub":"alice","exp":-1e308,"nbf":"x","iat":[]}`) + "." + sigOf(hs),
		seg(strings.Repeat("[", 5000)+strings.Repeat("]", 5000)) + ".e30.",
		seg(`{"alg":"HS256","x":`+strings.Repeat(`{"a":`, 3000)+"1"+strings.Repeat("}", 3000)+"}") + ".e30." + sigOf(hs),
		seg(`{"alg":"HS256"}`) + "." + seg(`{"sub":`+strings.Repeat("[", 4000)+strings.Repeat("]", 4000)+`}`) + "." + sigOf(hs),
		// Alg confusion: HS256 keyed with the public key bytes.
		mint(f, jwt.SigningMethodHS256, pemPKIX(f, &rsaA.PublicKey), claims(nil), nil),
		mint(f, jwt.SigningMethodHS256, []byte(edKeyA.Public().(ed25519PublicKey)), claims(nil), nil),
		mint(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), nil),
		// A valid token's signature grafted onto another payload.
		seg(`{"alg":"HS256","typ":"JWT"}`) + "." + seg(`{"sub":"mallory","exp":1800000000}`) + "." + sigOf(hs),
		hs + "=", hs + ".", " " + hs, strings.ToUpper(hs),
	}
	for _, h := range hostile {
		f.Add(h)
	}
	// A valid token's claims with a padded payload segment (which strict
	// decoding rejects): plausible base64 JSON for the mutator to work on.
	if b, err := json.Marshal(claims(nil)); err == nil {
		f.Add(seg(`{"alg":"HS256","typ":"JWT"}`) + "." + b64u(b) + "=." + sigOf(hs))
	}

	f.Fuzz(func(t *testing.T, tok string) {
		for i, v := range verifiers {
			start := time.Now()
			name, err := v.Verify(tok)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("verifier %d took %v", i, d)
			}
			if err != nil {
				if name != "" {
					t.Fatalf("verifier %d: name %q returned with error %v", i, name, err)
				}
				if errors.Is(err, ErrNoToken) == errors.Is(err, ErrInvalidToken) {
					t.Fatalf("verifier %d: error %v wraps neither or both of ErrNoToken and ErrInvalidToken", i, err)
				}
				if errors.Is(err, ErrNoToken) && tok != "" {
					t.Fatalf("verifier %d: ErrNoToken for a non-empty token", i)
				}
				continue
			}
			want, ok := valid[i][tok]
			if !ok {
				t.Fatalf("verifier %d accepted %q (name %q), which is not a validly signed seed", i, tok, name)
			}
			if name != want {
				t.Fatalf("verifier %d: name %q, want %q", i, name, want)
			}
		}
	})
}
