package auth_test

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/natsrtc/signal/services/auth"
)

// Example mints an HS256 test token with golang-jwt/jwt/v5, as an identity
// provider (or a test) would, and verifies it the way the edge does on a
// WebSocket upgrade.
func Example() {
	secret := []byte("example-secret-of-at-least-32-bytes")
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

	mint := func(exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "alice",
			"iss": "https://login.example",
			"aud": "signal",
			"iat": now.Unix(),
			"exp": exp.Unix(),
		}).SignedString(secret)
		if err != nil {
			panic(err)
		}
		return tok
	}

	v, err := auth.New(auth.Config{
		HMACSecret: secret,
		Issuer:     "https://login.example",
		Audience:   "signal",
		Now:        func() time.Time { return now }, // a real server leaves Now nil
	})
	if err != nil {
		panic(err)
	}

	// Browsers pass the token in the query: they cannot set headers on a
	// WebSocket upgrade.
	r := httptest.NewRequest("GET", "/ws?token="+mint(now.Add(time.Hour)), nil)
	name, err := v.Verify(auth.TokenFromRequest(r))
	fmt.Println(name, err)

	// Other clients may send "Authorization: Bearer <token>".
	r = httptest.NewRequest("GET", "/ws", nil)
	r.Header.Set("Authorization", "Bearer "+mint(now.Add(-time.Hour)))
	_, err = v.Verify(auth.TokenFromRequest(r))
	fmt.Println(errors.Is(err, auth.ErrInvalidToken), errors.Is(err, jwt.ErrTokenExpired))

	_, err = v.Verify(auth.TokenFromRequest(httptest.NewRequest("GET", "/ws", nil)))
	fmt.Println(err)

	// Output:
	// alice <nil>
	// true true
	// auth: no token
}
