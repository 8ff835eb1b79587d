package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/turn"
)

// TestAuthAndTURN runs signal with JWT authentication and TURN credentials
// on: a connection without a valid token is refused at the upgrade with
// 401; a token's holder may log in only with its subject; the login reply
// carries iceServers whose credential is the TURN REST HMAC.
func TestAuthAndTURN(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := binaries(t)
	secret := "0123456789abcdef0123456789abcdef-test-secret"
	secretFile := filepath.Join(t.TempDir(), "hmac")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wsPort, natsPort := freePort(t), freePort(t)
	startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsPort),
		"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-data", t.TempDir(),
		"-auth-hmac-file", secretFile, "-auth-issuer", "https://id.example",
		"-turn-secret", "turn-secret", "-turn-urls", "turn:127.0.0.1:3478?transport=udp")
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsPort))
	url := fmt.Sprintf("ws://127.0.0.1:%d/", wsPort)

	mint := func(sub, iss string, exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "iss": iss, "exp": exp.Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	dialTok := func(h http.Header, query string) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Dial(ctx, url+query, &client.Options{Header: h})
	}
	for _, tt := range []struct {
		name  string
		token string
	}{
		{"no token", ""},
		{"garbage", "not.a.jwt"},
		{"expired", mint("alice", "https://id.example", time.Now().Add(-time.Hour))},
		{"wrong issuer", mint("alice", "https://evil.example", time.Now().Add(time.Hour))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.token != "" {
				h.Set("Authorization", "Bearer "+tt.token)
			}
			_, err := dialTok(h, "")
			var se ws.StatusError
			if !errors.As(err, &se) || int(se) != http.StatusUnauthorized {
				t.Fatalf("dial: %v, want 401", err)
			}
		})
	}

	c, err := dialTok(nil, "?token="+mint("alice", "https://id.example", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Login(ctx, "mallory"); err == nil {
		t.Fatal("logged in with a name the token does not grant")
	}
	m, err := c.Login(ctx, "alice")
	if err != nil {
		t.Fatalf("login: %v %s", err, m.Raw)
	}
	var reply struct {
		ICEServers []turn.ICEServer `json:"iceServers"`
	}
	if err := json.Unmarshal(m.Raw, &reply); err != nil || len(reply.ICEServers) != 1 {
		t.Fatalf("iceServers in %s: %v", m.Raw, err)
	}
	ice := reply.ICEServers[0]
	expiry, name, _ := strings.Cut(ice.Username, ":")
	if name != "alice" || ice.Credential != turn.Credential("turn-secret", ice.Username) || ice.URLs[0] != "turn:127.0.0.1:3478?transport=udp" {
		t.Fatalf("iceServers %+v", ice)
	}
	t.Logf("TURN username %s (expiry %s)", ice.Username, expiry)
}
