package auth

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Password length bounds. bcrypt reads at most 72 bytes, so a longer password would be
// silently cut; it is refused instead.
const (
	MinPasswordLen   = 10
	MaxPasswordBytes = 72
)

// ErrBadPassword means a password does not meet the length rules.
var ErrBadPassword = errors.New("bad password")

// CheckPasswordRules returns an error saying what is allowed when pw is too short or
// too long.
func CheckPasswordRules(pw string) error {
	if n := utf8.RuneCountInString(pw); n < MinPasswordLen {
		return fmt.Errorf("%w: it has %d characters; use at least %d", ErrBadPassword, n, MinPasswordLen)
	}
	if len(pw) > MaxPasswordBytes {
		return fmt.Errorf("%w: it is %d bytes long; use at most %d", ErrBadPassword, len(pw), MaxPasswordBytes)
	}
	return nil
}

// HashPassword checks pw against the rules and returns its bcrypt hash.
func HashPassword(pw string) (string, error) {
	if err := CheckPasswordRules(pw); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// PasswordMatches reports whether pw matches a hash from HashPassword. An empty hash
// (no password set) matches nothing.
func PasswordMatches(hash, pw string) bool {
	if hash == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

// NewPassword returns a random password of 20 characters from an alphabet without
// look-alike letters, for `project-server researcher add` to print once.
func NewPassword() (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 20)
	if _, err := randRead(b); err != nil {
		return "", fmt.Errorf("new password: %w", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
