// Package auth makes and checks the project server's secrets: volunteer account keys,
// host tokens, researcher API tokens and web sessions, and researchers' passwords
// (bcrypt) and roles. Secrets are 256-bit random strings with a prefix naming their
// kind; the database stores only their sha256, so a leaked database does not let
// anyone act as a host or researcher.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Secret kinds, used as prefixes so a token pasted in the wrong place is recognisable.
const (
	AccountKeyPrefix      = "tga_"
	HostTokenPrefix       = "tgh_"
	ResearcherTokenPrefix = "tgr_"
)

// New returns a fresh secret with the given prefix and its hash for storage.
func New(prefix string) (secret, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("new secret: %w", err)
	}
	secret = prefix + hex.EncodeToString(b[:])
	return secret, Hash(secret), nil
}

// Hash is the stored form of a secret.
func Hash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}

// ErrNoToken means the request had no usable Authorization header.
var ErrNoToken = errors.New("missing \"Authorization: Bearer <token>\" header")

// Bearer extracts the token from an Authorization header.
func Bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return "", ErrNoToken
	}
	return tok, nil
}
