package cli

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/store"
)

// TestResearcherPasswords: researcher add prints a first password that signs in (or
// takes one from an environment variable), --admin makes an admin, and researcher
// password sets a new one; bad passwords are refused before anything is written.
func TestResearcherPasswords(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "texgrid.db")
	pwLine := regexp.MustCompile(`web sign-in: name "ada", password (\S+)`)
	tok, stderr, code := run(t, "researcher", "add", "--name", "ada", "--db", dbPath)
	m := pwLine.FindStringSubmatch(stderr)
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(tok), "tgr_") || m == nil {
		t.Fatalf("researcher add: code %d, stdout %q, stderr %q", code, tok, stderr)
	}
	t.Setenv("ROOT_PW", "root's chosen password")
	t.Setenv("SHORT_PW", "short")
	cases := []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{"admin with a chosen password", []string{"researcher", "add", "--name", "root", "--admin", "--password-env", "ROOT_PW"}, 0, `web sign-in: name "root", password root's chosen password`},
		{"short password", []string{"researcher", "add", "--name", "bob", "--password-env", "SHORT_PW"}, 1, "at least 10"},
		{"unset variable", []string{"researcher", "add", "--name", "bob", "--password-env", "NO_SUCH_VAR"}, 1, "password from $NO_SUCH_VAR"},
		{"same name twice", []string{"researcher", "add", "--name", "ada"}, 1, "already signs in with a password"},
		{"password without id", []string{"researcher", "password"}, 1, "--id is required"},
		{"password of unknown id", []string{"researcher", "password", "--id", "99"}, 1, "unknown researcher"},
		{"new password", []string{"researcher", "password", "--id", "1", "--password-env", "ROOT_PW"}, 0, `sign in as "ada" with password root's chosen password`},
	}
	for _, tc := range cases {
		out, errOut, code := run(t, append(tc.args, "--db", dbPath)...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%s: code %d (want %d), output %q %q, want %q", tc.name, code, tc.code, out, errOut, tc.want)
		}
	}
	ctx := context.Background()
	db, err := store.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	p := &auth.People{DB: db}
	if _, err := p.SignIn(ctx, "ada", m[1]); err == nil {
		t.Error("ada's first password still signs in after researcher password set a new one")
	}
	if r, err := p.SignIn(ctx, "ada", "root's chosen password"); err != nil || r.Admin() {
		t.Errorf("ada with her new password: %+v, %v", r, err)
	}
	if r, err := p.SignIn(ctx, "root", "root's chosen password"); err != nil || !r.Admin() {
		t.Errorf("root: %+v, %v; want an admin", r, err)
	}
	var n int64
	if err := db.Raw("SELECT COUNT(*) FROM researchers WHERE name IN ('bob', 'ada')").Scan(&n).Error; err != nil || n != 1 {
		t.Errorf("refused adds left %d researchers named bob or ada, want only the first ada (%v)", n, err)
	}
}
