package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// parsePEMKeys parses every PEM block in data as a public key.
func parsePEMKeys(data []byte) ([]pubKey, error) {
	var keys []pubKey
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		default:
			if strings.Contains(block.Type, "PRIVATE") {
				return nil, fmt.Errorf("auth: PEM block %d is a private key (%q); give the public key", n, block.Type)
			}
			return nil, fmt.Errorf("auth: PEM block %d: unsupported type %q", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("auth: PEM block %d (%s): %w", n, block.Type, err)
		}
		if err := checkKey(key); err != nil {
			return nil, fmt.Errorf("auth: PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, pubKey{key: key})
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: PublicKeysPEM holds no PEM block")
	}
	// pem.Decode skips what it cannot parse: count the BEGIN lines so a
	// damaged block is an error, not a silently missing key.
	if begins := bytes.Count(data, []byte("-----BEGIN ")); begins != len(keys) {
		return nil, fmt.Errorf("auth: PublicKeysPEM has %d BEGIN lines but only %d well-formed PEM blocks", begins, len(keys))
	}
	return keys, nil
}

// checkKey accepts RSA keys of at least MinRSABits and Ed25519 keys.
func checkKey(key any) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("RSA key has %d bits, need at least %d", bits, MinRSABits)
		}
		if k.E < 3 || k.E%2 == 0 {
			return fmt.Errorf("RSA key has invalid exponent %d", k.E)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("Ed25519 key has %d bytes, want %d", len(k), ed25519.PublicKeySize)
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
}

// jwk is the subset of RFC 7517/7518/8037 members this package reads.
type jwk struct {
	Kty string  `json:"kty"`
	Kid string  `json:"kid"`
	Use string  `json:"use"`
	Alg string  `json:"alg"`
	Crv string  `json:"crv"`
	N   string  `json:"n"`
	E   string  `json:"e"`
	X   string  `json:"x"`
	D   *string `json:"d"`
}

// parseJWKS parses a JWKS document; see Config.JWKS for the rules.
func parseJWKS(data []byte) ([]pubKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	var keys []pubKey
	seen := map[string]bool{}
	for i, k := range set.Keys {
		key, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS key %d (kid %q): %w", i, k.Kid, err)
		}
		if key == nil {
			continue // not a signature key of a supported type
		}
		if seen[k.Kid] {
			return nil, fmt.Errorf("auth: JWKS: duplicate kid %q", k.Kid)
		}
		seen[k.Kid] = true
		pk := pubKey{kid: k.Kid, alg: k.Alg, key: key}
		if k.Alg != "" && !pk.allows(k.Alg) {
			return nil, fmt.Errorf("auth: JWKS key %d (kid %q): alg %q does not fit kty %q", i, k.Kid, k.Alg, k.Kty)
		}
		keys = append(keys, pk)
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: JWKS holds no usable RSA or Ed25519 signature key")
	}
	return keys, nil
}

// publicKey returns the key k describes, nil for a key this package skips
// (other kty or curve, or not for signatures), or an error for a malformed
// key of a supported type.
func (k *jwk) publicKey() (any, error) {
	if k.Use != "" && k.Use != "sig" {
		return nil, nil
	}
	switch {
	case k.Kty == "RSA":
		if k.D != nil {
			return nil, errors.New("holds private key material (d)")
		}
		n, err := b64(k.N, "n")
		if err != nil {
			return nil, err
		}
		e, err := b64(k.E, "e")
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, fmt.Errorf("exponent e is %d bytes long", len(e))
		}
		exp := 0
		for _, b := range e {
			exp = exp<<8 | int(b)
		}
		if exp > 1<<31-1 {
			return nil, fmt.Errorf("exponent %d is too large", exp)
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
		if err := checkKey(key); err != nil {
			return nil, err
		}
		return key, nil
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		if k.D != nil {
			return nil, errors.New("holds private key material (d)")
		}
		x, err := b64(k.X, "x")
		if err != nil {
			return nil, err
		}
		key := ed25519.PublicKey(x)
		if err := checkKey(key); err != nil {
			return nil, err
		}
		return key, nil
	}
	return nil, nil
}

// b64 decodes a base64url member, tolerating padding.
func b64(s, member string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("member %q is missing", member)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", member, err)
	}
	return b, nil
}
