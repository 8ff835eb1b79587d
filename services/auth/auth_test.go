package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerify(t *testing.T) {
	rsaA, rsaB := rsaKeyA(), rsaKeyB()
	pemRSA := pemPKIX(t, &rsaA.PublicKey)
	pemEd := pemPKIX(t, edKeyA.Public())
	jwks := jwksDoc(t, rsaJWK("rsa1", &rsaA.PublicKey), edJWK("ed1", edKeyA.Public().(ed25519PublicKey)))

	hmacV := mustNew(t, Config{HMACSecret: testSecret, Issuer: "https://issuer.test", Audience: "signal"})
	hmacNoIssV := mustNew(t, Config{HMACSecret: testSecret})
	rsaV := mustNew(t, Config{PublicKeysPEM: pemRSA})
	rsaPKCS1V := mustNew(t, Config{PublicKeysPEM: pemPKCS1(&rsaA.PublicKey)})
	certV := mustNew(t, Config{PublicKeysPEM: pemCert(t, rsaA)})
	edV := mustNew(t, Config{PublicKeysPEM: pemEd})
	bundleV := mustNew(t, Config{PublicKeysPEM: append(append(pemPKIX(t, &rsaB.PublicKey), pemEd...), pemRSA...)})
	jwksV := mustNew(t, Config{JWKS: jwks, Audience: "signal"})
	jwksOneV := mustNew(t, Config{JWKS: jwksDoc(t, edJWK("only", edKeyB.Public().(ed25519PublicKey)))})
	restricted := rsaJWK("ps", &rsaA.PublicKey)
	restricted["alg"] = "PS256"
	jwksPSV := mustNew(t, Config{JWKS: jwksDoc(t, restricted)})
	customV := mustNew(t, Config{HMACSecret: testSecret, NameClaim: "preferred_username"})
	noLeewayV := mustNew(t, Config{HMACSecret: testSecret, Leeway: -1})

	hs := func(c jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, testSecret, c, nil) }
	valid := claims(nil)
	kid := func(k string) map[string]any { return map[string]any{"kid": k} }
	noneTok := func(c jwt.MapClaims) string {
		return mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, c, nil)
	}
	// Flip the low bits of the last signature character: strict base64
	// decoding must reject the non-canonical spelling even though it decodes
	// to the same bytes.
	nonCanonical := func(tok string) string {
		last := tok[len(tok)-1]
		idx := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last)
		return tok[:len(tok)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[idx|1])
	}
	hsValid := hs(valid)
	tampered := func(tok string) string {
		parts := strings.Split(tok, ".")
		parts[1] = b64u([]byte(`{"sub":"mallory","exp":1700003600}`))
		return strings.Join(parts, ".")
	}

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		want   string // name on success
		err    error  // ErrInvalidToken or ErrNoToken on failure
		jwtErr error  // the library error also wrapped, if checked
	}{
		// Valid tokens for every key source and algorithm family.
		{name: "HS256 valid", v: hmacV, token: hsValid, want: "alice"},
		{name: "HS384 valid", v: hmacV, token: mint(t, jwt.SigningMethodHS384, testSecret, valid, nil), want: "alice"},
		{name: "HS512 valid", v: hmacV, token: mint(t, jwt.SigningMethodHS512, testSecret, valid, nil), want: "alice"},
		{name: "RS256 valid PKIX PEM", v: rsaV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), want: "alice"},
		{name: "RS512 valid PKIX PEM", v: rsaV, token: mint(t, jwt.SigningMethodRS512, rsaA, valid, nil), want: "alice"},
		{name: "PS256 valid PKIX PEM", v: rsaV, token: mint(t, jwt.SigningMethodPS256, rsaA, valid, nil), want: "alice"},
		{name: "RS256 valid PKCS1 PEM", v: rsaPKCS1V, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), want: "alice"},
		{name: "RS256 valid certificate PEM", v: certV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), want: "alice"},
		{name: "EdDSA valid PEM", v: edV, token: mint(t, jwt.SigningMethodEdDSA, edKeyA, valid, nil), want: "alice"},
		{name: "PEM bundle RS256 by second RSA key", v: bundleV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), want: "alice"},
		{name: "PEM bundle RS256 by first RSA key", v: bundleV, token: mint(t, jwt.SigningMethodRS256, rsaB, valid, nil), want: "alice"},
		{name: "PEM bundle EdDSA", v: bundleV, token: mint(t, jwt.SigningMethodEdDSA, edKeyA, valid, nil), want: "alice"},
		{name: "PEM kid header ignored", v: rsaV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, kid("whatever")), want: "alice"},
		{name: "JWKS RSA by kid", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, kid("rsa1")), want: "alice"},
		{name: "JWKS Ed25519 by kid", v: jwksV, token: mint(t, jwt.SigningMethodEdDSA, edKeyA, valid, kid("ed1")), want: "alice"},
		{name: "JWKS single key without kid", v: jwksOneV, token: mint(t, jwt.SigningMethodEdDSA, edKeyB, valid, nil), want: "alice"},
		{name: "JWKS alg restriction met", v: jwksPSV, token: mint(t, jwt.SigningMethodPS256, rsaA, valid, kid("ps")), want: "alice"},
		{name: "audience in array", v: hmacV, token: hs(claims(map[string]any{"aud": []string{"other", "signal"}})), want: "alice"},
		{name: "expired within leeway", v: hmacV, token: hs(claims(map[string]any{"exp": testNow.Add(-10 * time.Second).Unix()})), want: "alice"},
		{name: "nbf within leeway", v: hmacV, token: hs(claims(map[string]any{"nbf": testNow.Add(10 * time.Second).Unix()})), want: "alice"},
		{name: "nbf passed", v: hmacV, token: hs(claims(map[string]any{"nbf": testNow.Add(-time.Second).Unix()})), want: "alice"},
		{name: "no iat", v: hmacV, token: hs(claims(map[string]any{"iat": nil})), want: "alice"},
		{name: "iss and aud unchecked when not configured", v: hmacNoIssV, token: hs(claims(map[string]any{"iss": "x", "aud": "y"})), want: "alice"},
		{name: "custom name claim", v: customV, token: hs(claims(map[string]any{"preferred_username": "Bob 🙂"})), want: "Bob 🙂"},

		// Time claims.
		{name: "expired", v: hmacV, token: hs(claims(map[string]any{"exp": testNow.Add(-time.Minute).Unix()})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenExpired},
		{name: "expired no leeway", v: noLeewayV, token: hs(claims(map[string]any{"exp": testNow.Add(-time.Second).Unix()})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenExpired},
		{name: "not yet valid nbf", v: hmacV, token: hs(claims(map[string]any{"nbf": testNow.Add(time.Minute).Unix()})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenNotValidYet},
		{name: "iat in the future", v: hmacV, token: hs(claims(map[string]any{"iat": testNow.Add(time.Minute).Unix()})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUsedBeforeIssued},
		{name: "missing exp", v: hmacV, token: hs(claims(map[string]any{"exp": nil})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenRequiredClaimMissing},
		{name: "exp zero", v: hmacV, token: hs(claims(map[string]any{"exp": 0})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenRequiredClaimMissing},
		{name: "exp not a number", v: hmacV, token: hs(claims(map[string]any{"exp": "tomorrow"})), err: ErrInvalidToken, jwtErr: jwt.ErrInvalidType},

		// Issuer and audience.
		{name: "wrong issuer", v: hmacV, token: hs(claims(map[string]any{"iss": "https://evil.test"})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidIssuer},
		{name: "missing issuer", v: hmacV, token: hs(claims(map[string]any{"iss": nil})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidClaims},
		{name: "wrong audience", v: hmacV, token: hs(claims(map[string]any{"aud": "other"})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidAudience},
		{name: "wrong audience array", v: hmacV, token: hs(claims(map[string]any{"aud": []string{"a", "b"}})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidAudience},
		{name: "missing audience", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, claims(map[string]any{"aud": nil}), kid("rsa1")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidClaims},

		// Signatures.
		{name: "wrong HMAC secret", v: hmacV, token: mint(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789-abcdefghijkl"), valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "tampered payload HS256", v: hmacV, token: tampered(hsValid), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "tampered payload RS256", v: rsaV, token: tampered(mint(t, jwt.SigningMethodRS256, rsaA, valid, nil)), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "RS256 by another key", v: rsaV, token: mint(t, jwt.SigningMethodRS256, rsaB, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "EdDSA by another key", v: edV, token: mint(t, jwt.SigningMethodEdDSA, edKeyB, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "non-canonical signature base64", v: hmacV, token: nonCanonical(hsValid), err: ErrInvalidToken, jwtErr: jwt.ErrTokenMalformed},
		{name: "signature stripped", v: hmacV, token: hsValid[:strings.LastIndexByte(hsValid, '.')+1], err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},

		// Algorithm confusion and alg none.
		{name: "alg none vs HMAC", v: hmacV, token: noneTok(valid), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "alg none vs PEM", v: rsaV, token: noneTok(valid), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "alg none vs JWKS", v: jwksV, token: mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid, kid("rsa1")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "HS256 keyed with RSA PEM bytes", v: rsaV, token: mint(t, jwt.SigningMethodHS256, pemRSA, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "HS256 keyed with Ed25519 PEM bytes", v: edV, token: mint(t, jwt.SigningMethodHS256, pemEd, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "HS256 keyed with JWKS bytes", v: jwksV, token: mint(t, jwt.SigningMethodHS256, jwks, valid, kid("rsa1")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "RS256 vs HMAC verifier", v: hmacV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "EdDSA vs RSA-only PEM", v: rsaV, token: mint(t, jwt.SigningMethodEdDSA, edKeyA, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "RS256 vs Ed25519-only PEM", v: edV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenSignatureInvalid},
		{name: "JWKS kid of Ed key with RS256", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, kid("ed1")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "JWKS alg restriction violated", v: jwksPSV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, kid("ps")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "JWKS unknown kid", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, kid("nope")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "JWKS two keys no kid", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, nil), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "JWKS kid not a string", v: jwksV, token: mint(t, jwt.SigningMethodRS256, rsaA, valid, map[string]any{"kid": 7}), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "JWKS single key wrong kid", v: jwksOneV, token: mint(t, jwt.SigningMethodEdDSA, edKeyB, valid, kid("other")), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "crit header", v: hmacV, token: mint(t, jwt.SigningMethodHS256, testSecret, valid, map[string]any{"crit": []string{"exp"}}), err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},
		{name: "unknown alg", v: hmacV, token: b64u([]byte(`{"alg":"HS1024"}`)) + "." + b64u([]byte(`{}`)) + ".AAAA", err: ErrInvalidToken, jwtErr: jwt.ErrTokenUnverifiable},

		// Name claim.
		{name: "name missing", v: hmacV, token: hs(claims(map[string]any{"sub": nil})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenRequiredClaimMissing},
		{name: "name empty", v: hmacV, token: hs(claims(map[string]any{"sub": ""})), err: ErrInvalidToken, jwtErr: jwt.ErrTokenInvalidClaims},
		{name: "name not a string", v: customV, token: hs(claims(map[string]any{"preferred_username": 42})), err: ErrInvalidToken, jwtErr: jwt.ErrInvalidType},
		{name: "name is an array", v: customV, token: hs(claims(map[string]any{"preferred_username": []string{"alice"}})), err: ErrInvalidToken, jwtErr: jwt.ErrInvalidType},
		{name: "name is JSON null", v: hmacNoIssV, token: hs(jwt.MapClaims{"sub": nil, "exp": testNow.Add(time.Hour).Unix()}), err: ErrInvalidToken, jwtErr: jwt.ErrInvalidType},
		{name: "custom name claim missing though sub present", v: customV, token: hsValid, err: ErrInvalidToken, jwtErr: jwt.ErrTokenRequiredClaimMissing},

		// Malformed input.
		{name: "empty", v: hmacV, token: "", err: ErrNoToken},
		{name: "garbage", v: hmacV, token: "not a token", err: ErrInvalidToken, jwtErr: jwt.ErrTokenMalformed},
		{name: "four segments", v: hmacV, token: hsValid + ".x", err: ErrInvalidToken, jwtErr: jwt.ErrTokenMalformed},
		{name: "header not JSON", v: hmacV, token: b64u([]byte("{")) + "." + b64u([]byte("{}")) + ".", err: ErrInvalidToken, jwtErr: jwt.ErrTokenMalformed},
		{name: "too long", v: hmacV, token: hsValid + strings.Repeat("A", MaxTokenLen), err: ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.Verify(tc.token)
			if tc.err == nil {
				if err != nil || got != tc.want {
					t.Fatalf("Verify = %q, %v; want %q, nil", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify = %q, nil; want error %v", got, tc.err)
			}
			t.Logf("rejected: %v", err)
			if got != "" {
				t.Errorf("Verify returned name %q with error %v", got, err)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error %v does not wrap %v", err, tc.err)
			}
			if tc.jwtErr != nil && !errors.Is(err, tc.jwtErr) {
				t.Errorf("error %v does not wrap %v", err, tc.jwtErr)
			}
		})
	}
}

// TestVerifyConcurrent runs Verify from many goroutines (meaningful under
// -race).
func TestVerifyConcurrent(t *testing.T) {
	v := mustNew(t, Config{HMACSecret: testSecret})
	good := mint(t, jwt.SigningMethodHS256, testSecret, claims(nil), nil)
	bad := mint(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": 1}), nil)
	done := make(chan error)
	for range 8 {
		go func() {
			for range 50 {
				if _, err := v.Verify(good); err != nil {
					done <- err
					return
				}
				if _, err := v.Verify(bad); err == nil {
					done <- errors.New("expired token accepted")
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestRealClock checks the zero Now and Leeway defaults with the real clock.
func TestRealClock(t *testing.T) {
	v, err := New(Config{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name string
		exp  time.Time
		ok   bool
	}{
		{"valid", now.Add(time.Hour), true},
		{"expired 10s ago within default leeway", now.Add(-10 * time.Second), true},
		{"expired 2m ago", now.Add(-2 * time.Minute), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := mint(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "a", "exp": tc.exp.Unix()}, nil)
			_, err := v.Verify(tok)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify error = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestNew(t *testing.T) {
	rsaA := rsaKeyA()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak := genRSA(1024)
	pemRSA := pemPKIX(t, &rsaA.PublicKey)
	privDER, err := x509MarshalPKCS8(rsaA)
	if err != nil {
		t.Fatal(err)
	}
	withD := edJWK("ed", edKeyA.Public().(ed25519PublicKey))
	withD["d"] = b64u(edKeyA.Seed())
	badAlg := rsaJWK("r", &rsaA.PublicKey)
	badAlg["alg"] = "EdDSA"
	encOnly := rsaJWK("enc", &rsaA.PublicKey)
	encOnly["use"] = "enc"
	ecJWK := map[string]any{"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"}
	badN := rsaJWK("r", &rsaA.PublicKey)
	badN["n"] = "!!!"
	noE := rsaJWK("r", &rsaA.PublicKey)
	delete(noE, "e")
	shortX := edJWK("ed", edKeyA.Public().(ed25519PublicKey))
	shortX["x"] = b64u([]byte("short"))
	evenE := rsaJWK("r", &rsaA.PublicKey)
	evenE["e"] = b64u([]byte{1, 0, 0})

	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means success
	}{
		{"HMAC", Config{HMACSecret: testSecret}, ""},
		{"PEM RSA", Config{PublicKeysPEM: pemRSA}, ""},
		{"PEM with text around blocks", Config{PublicKeysPEM: append(append([]byte("issuer key:\n"), pemRSA...), "\n-- end\n"...)}, ""},
		{"JWKS skipping EC and enc keys", Config{JWKS: jwksDoc(t, ecJWK, encOnly, rsaJWK("r", &rsaA.PublicKey))}, ""},
		{"JWKS with padded base64", Config{JWKS: []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + b64u(edKeyA.Public().(ed25519PublicKey)) + `="}]}`)}, ""},
		{"no key source", Config{Issuer: "x"}, "no key source"},
		{"empty secret counts as unset", Config{HMACSecret: []byte{}}, "no key source"},
		{"two key sources", Config{HMACSecret: testSecret, PublicKeysPEM: pemRSA}, "more than one key source"},
		{"three key sources", Config{HMACSecret: testSecret, PublicKeysPEM: pemRSA, JWKS: []byte("{}")}, "more than one key source"},
		{"short HMAC secret", Config{HMACSecret: []byte("short")}, "at least 32"},
		{"PEM garbage", Config{PublicKeysPEM: []byte("not pem at all")}, "no PEM block"},
		{"PEM damaged block", Config{PublicKeysPEM: append(append([]byte(nil), pemRSA...), "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n"...)}, "well-formed"},
		{"PEM bad DER", Config{PublicKeysPEM: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}, "PEM block 1"},
		{"PEM private key", Config{PublicKeysPEM: pemBlock("PRIVATE KEY", privDER)}, "private key"},
		{"PEM unknown type", Config{PublicKeysPEM: pemBlock("FOO", []byte{1})}, "unsupported type"},
		{"PEM ECDSA key", Config{PublicKeysPEM: pemPKIX(t, &ec.PublicKey)}, "unsupported key type"},
		{"PEM weak RSA", Config{PublicKeysPEM: pemPKIX(t, &weak.PublicKey)}, "1024 bits"},
		{"JWKS not JSON", Config{JWKS: []byte("{")}, "JWKS"},
		{"JWKS no keys", Config{JWKS: []byte(`{"keys":[]}`)}, "no usable"},
		{"JWKS only unsupported keys", Config{JWKS: jwksDoc(t, ecJWK)}, "no usable"},
		{"JWKS duplicate kid", Config{JWKS: jwksDoc(t, rsaJWK("k", &rsaA.PublicKey), edJWK("k", edKeyA.Public().(ed25519PublicKey)))}, "duplicate kid"},
		{"JWKS private member", Config{JWKS: jwksDoc(t, withD)}, "private"},
		{"JWKS alg does not fit kty", Config{JWKS: jwksDoc(t, badAlg)}, "does not fit"},
		{"JWKS bad n", Config{JWKS: jwksDoc(t, badN)}, `"n"`},
		{"JWKS missing e", Config{JWKS: jwksDoc(t, noE)}, `"e"`},
		{"JWKS even e", Config{JWKS: jwksDoc(t, evenE)}, "exponent"},
		{"JWKS short x", Config{JWKS: jwksDoc(t, shortX)}, "Ed25519 key has 5 bytes"},
		{"JWKS weak RSA", Config{JWKS: jwksDoc(t, rsaJWK("w", &weak.PublicKey))}, "1024 bits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil || v == nil {
					t.Fatalf("New = %v, %v; want a verifier", v, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v; want one containing %q", err, tc.wantErr)
			}
			if v != nil {
				t.Errorf("New returned a verifier with an error")
			}
		})
	}
}

func TestNewCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	v := mustNew(t, Config{HMACSecret: secret})
	tok := mint(t, jwt.SigningMethodHS256, testSecret, claims(nil), nil)
	secret[0] ^= 0xff
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify after caller changed its secret slice: %v", err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		target string
		auth   string // Authorization header, if non-empty
		want   string
	}{
		{"bearer header", "/ws", "Bearer abc.def.ghi", "abc.def.ghi"},
		{"bearer lower case", "/ws", "bearer abc.def.ghi", "abc.def.ghi"},
		{"bearer extra spaces", "/ws", "  Bearer   abc.def.ghi  ", "abc.def.ghi"},
		{"query", "/ws?token=q.r.s", "", "q.r.s"},
		{"query escaped", "/ws?x=1&token=a%2Bb.c.d", "", "a+b.c.d"},
		{"header wins over query", "/ws?token=q.r.s", "Bearer h.h.h", "h.h.h"},
		{"neither", "/ws", "", ""},
		{"basic ignored", "/ws", "Basic dXNlcjpwYXNz", ""},
		{"basic ignored query used", "/ws?token=q.r.s", "Basic dXNlcjpwYXNz", "q.r.s"},
		{"bearer without token falls back to query", "/ws?token=q.r.s", "Bearer ", "q.r.s"},
		{"bearer alone", "/ws", "Bearer", ""},
		{"scheme prefix only", "/ws", "Bearerabc", ""},
		{"empty query value", "/ws?token=", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			if got := TokenFromRequest(r); got != tc.want {
				t.Fatalf("TokenFromRequest = %q, want %q", got, tc.want)
			}
		})
	}
}
