package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
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

// TestTLS serves wss:// with -tls-cert and -tls-key.
func TestTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := binaries(t)
	dir := t.TempDir()
	certPEM, keyPEM, pool := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, certPEM, 0o600)
	_ = os.WriteFile(keyFile, keyPEM, 0o600)
	wsPort, natsPort := freePort(t), freePort(t)
	startProc(t, filepath.Join(bin, "signal"),
		"-listen", fmt.Sprintf("127.0.0.1:%d", wsPort),
		"-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-data", t.TempDir(), "-tls-cert", certFile, "-tls-key", keyFile)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", wsPort))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, fmt.Sprintf("wss://127.0.0.1:%d/", wsPort), &client.Options{TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Abort()
	if m, err := c.Login(ctx, "secure"); err != nil {
		t.Fatalf("login over wss: %v %s", err, m.Raw)
	}
	// Plain ws:// to the TLS port gets nowhere.
	if _, err := client.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/", wsPort), &client.Options{Timeout: 2 * time.Second}); err == nil {
		t.Fatal("plain WebSocket accepted on the TLS port")
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "signal test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), pool
}
