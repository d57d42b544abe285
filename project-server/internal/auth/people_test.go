package auth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/store"
)

func TestPasswordRules(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, pw string
		want     string // "" = accepted
	}{
		{"long enough", "correct horse", ""},
		{"too short", "short", "at least 10"},
		{"empty", "", "at least 10"},
		{"over 72 bytes", strings.Repeat("x", 73), "at most 72"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := auth.HashPassword(tc.pw)
			if tc.want == "" {
				if err != nil || !auth.PasswordMatches(h, tc.pw) || auth.PasswordMatches(h, tc.pw+"!") {
					t.Fatalf("hash %q: %v", tc.pw, err)
				}
				return
			}
			if !errors.Is(err, auth.ErrBadPassword) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("password %q: err %v, want one saying %q", tc.pw, err, tc.want)
			}
		})
	}
}

// TestSignInAndSessions: sign-in by name and password; a session lives until it is
// ended or expires; two researchers with a password cannot share a name.
func TestSignInAndSessions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sched := scheduler.New(db, nil, scheduler.Config{})
	ada, _, err := sched.AddResearcher(ctx, "ada")
	if err != nil {
		t.Fatal(err)
	}
	twin, _, err := sched.AddResearcher(ctx, "ada")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	p := &auth.People{DB: db, Now: func() time.Time { return now }}
	if _, err := p.SignIn(ctx, "ada", "whatever-password"); !errors.Is(err, auth.ErrBadSignIn) {
		t.Fatalf("sign-in without a password set: %v", err)
	}
	if err := p.SetPassword(ctx, ada, "ada's first password"); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPassword(ctx, twin, "the twin's password"); err == nil || !strings.Contains(err.Error(), "already signs in") {
		t.Fatalf("second researcher named ada got a password: %v", err)
	}
	cases := []struct {
		name, user, pw string
		ok             bool
	}{
		{"right", "ada", "ada's first password", true},
		{"wrong password", "ada", "ada's first passworD", false},
		{"unknown name", "bob", "ada's first password", false},
	}
	for _, tc := range cases {
		r, err := p.SignIn(ctx, tc.user, tc.pw)
		if tc.ok != (err == nil) || (tc.ok && r.ID != ada) {
			t.Errorf("%s: %+v, %v", tc.name, r, err)
		}
	}
	secret, _, err := p.NewSession(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p.Session(ctx, secret); err != nil || r.ID != ada || r.Admin() {
		t.Fatalf("fresh session: %+v, %v", r, err)
	}
	if err := p.SetRole(ctx, ada, auth.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if r, _ := p.Session(ctx, secret); !r.Admin() {
		t.Fatalf("session after promotion: %+v is not admin", r)
	}
	if _, err := p.Session(ctx, secret+"0"); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("wrong secret: %v", err)
	}
	now = now.Add(auth.SessionTTL + time.Second)
	if _, err := p.Session(ctx, secret); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("expired session: %v", err)
	}
	s2, _, err := p.NewSession(ctx, ada)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.EndSession(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Session(ctx, s2); !errors.Is(err, auth.ErrUnknown) {
		t.Fatalf("ended session: %v", err)
	}
}
