package auth

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/project-server/internal/store"
)

var randRead = rand.Read

// dummyHash is checked against when a name is unknown, so a sign-in takes as long
// whether or not the name exists.
var dummyHash = sync.OnceValue(func() string {
	h, _ := bcrypt.GenerateFromPassword([]byte("no such researcher"), bcrypt.DefaultCost)
	return string(h)
})

// Researcher roles. An admin sees and acts on every campaign; a researcher only on
// their own.
const (
	RoleResearcher = "researcher"
	RoleAdmin      = "admin"
)

// Researcher is who a token or a session acts as.
type Researcher struct {
	ID   int64
	Name string
	Role string
}

// Admin reports whether the researcher may act on every campaign.
func (r Researcher) Admin() bool { return r.Role == RoleAdmin }

// ErrUnknown means no researcher (or no session) matches.
var ErrUnknown = errors.New("unknown researcher")

// ErrBadSignIn means the name and password do not match a researcher with a password.
var ErrBadSignIn = errors.New("unknown name or wrong password")

// People reads and writes researchers' roles, passwords and sessions.
type People struct {
	DB *store.DB
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (p *People) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// ResearcherByID returns the researcher with the given id.
func (p *People) ResearcherByID(ctx context.Context, id int64) (Researcher, error) {
	var r Researcher
	row := p.DB.R.WithContext(ctx).Raw("SELECT id, name, role FROM researchers WHERE id = ?", id).Row()
	if err := row.Scan(&r.ID, &r.Name, &r.Role); err != nil {
		return Researcher{}, fmt.Errorf("researcher %d: %w", id, ErrUnknown)
	}
	return r, nil
}

// SetRole makes a researcher an admin or a plain researcher.
func (p *People) SetRole(ctx context.Context, id int64, role string) error {
	if role != RoleAdmin && role != RoleResearcher {
		return fmt.Errorf("role %q: want %q or %q", role, RoleResearcher, RoleAdmin)
	}
	res := p.DB.WithContext(ctx).Exec("UPDATE researchers SET role = ? WHERE id = ?", role, id)
	if res.Error != nil {
		return fmt.Errorf("set role of researcher %d: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("set role of researcher %d: %w", id, ErrUnknown)
	}
	return nil
}

// NameTaken reports whether a researcher with a password already signs in as name.
func (p *People) NameTaken(ctx context.Context, name string) (bool, error) {
	var n int64
	if err := p.DB.R.WithContext(ctx).Raw("SELECT COUNT(*) FROM researchers WHERE name = ? AND password_hash <> ''", name).Row().Scan(&n); err != nil {
		return false, fmt.Errorf("researcher name %q: %w", name, err)
	}
	return n > 0, nil
}

// SetPassword sets a researcher's sign-in password. Two researchers with a password
// may not share a name, since the name is what they sign in with.
func (p *People) SetPassword(ctx context.Context, id int64, pw string) error {
	h, err := HashPassword(pw)
	if err != nil {
		return err
	}
	var name string
	if err := p.DB.R.WithContext(ctx).Raw("SELECT name FROM researchers WHERE id = ?", id).Row().Scan(&name); err != nil {
		return fmt.Errorf("set password of researcher %d: %w", id, ErrUnknown)
	}
	var clash int64
	if err := p.DB.R.WithContext(ctx).Raw("SELECT COUNT(*) FROM researchers WHERE name = ? AND id <> ? AND password_hash <> ''", name, id).Row().Scan(&clash); err != nil {
		return fmt.Errorf("set password of researcher %d: %w", id, err)
	}
	if clash > 0 {
		return fmt.Errorf("set password of researcher %d: another researcher named %q already signs in with a password; pick another name", id, name)
	}
	if err := p.DB.WithContext(ctx).Exec("UPDATE researchers SET password_hash = ? WHERE id = ?", h, id).Error; err != nil {
		return fmt.Errorf("set password of researcher %d: %w", id, err)
	}
	return nil
}

// SignIn checks a name and password and returns the researcher.
func (p *People) SignIn(ctx context.Context, name, pw string) (Researcher, error) {
	var r Researcher
	var hash string
	row := p.DB.R.WithContext(ctx).Raw("SELECT id, name, role, password_hash FROM researchers WHERE name = ? AND password_hash <> ''", name).Row()
	if err := row.Scan(&r.ID, &r.Name, &r.Role, &hash); err != nil {
		// Spend the time a real check takes, so timing does not tell names apart.
		PasswordMatches(dummyHash(), pw)
		return Researcher{}, ErrBadSignIn
	}
	if !PasswordMatches(hash, pw) {
		return Researcher{}, ErrBadSignIn
	}
	return r, nil
}

// SessionTTL is how long a session lasts after sign-in.
const SessionTTL = 12 * time.Hour

// SessionPrefix marks session secrets.
const SessionPrefix = "tgs_"

// NewSession stores a session for the researcher and returns the cookie secret.
func (p *People) NewSession(ctx context.Context, researcherID int64) (string, time.Time, error) {
	secret, hash, err := New(SessionPrefix)
	if err != nil {
		return "", time.Time{}, err
	}
	now := p.now()
	exp := now.Add(SessionTTL)
	if err := p.DB.WithContext(ctx).Exec("INSERT INTO sessions (secret_hash, researcher_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
		hash, researcherID, now, exp).Error; err != nil {
		return "", time.Time{}, fmt.Errorf("new session: %w", err)
	}
	// Expired sessions are of no use; drop them while here.
	if err := p.DB.WithContext(ctx).Exec("DELETE FROM sessions WHERE expires_at < ?", now).Error; err != nil {
		return "", time.Time{}, fmt.Errorf("new session: drop expired: %w", err)
	}
	return secret, exp, nil
}

// Session returns the researcher of a live session.
func (p *People) Session(ctx context.Context, secret string) (Researcher, error) {
	var r Researcher
	row := p.DB.R.WithContext(ctx).Raw(`SELECT r.id, r.name, r.role FROM sessions s JOIN researchers r ON r.id = s.researcher_id
		WHERE s.secret_hash = ? AND s.expires_at > ?`, Hash(secret), p.now()).Row()
	if err := row.Scan(&r.ID, &r.Name, &r.Role); err != nil {
		return Researcher{}, fmt.Errorf("session: %w", ErrUnknown)
	}
	return r, nil
}

// EndSession deletes a session (sign-out).
func (p *People) EndSession(ctx context.Context, secret string) error {
	if err := p.DB.WithContext(ctx).Exec("DELETE FROM sessions WHERE secret_hash = ?", Hash(secret)).Error; err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// SetAccountPasswordHash stores a volunteer account's password hash (from
// HashPassword).
func (p *People) SetAccountPasswordHash(ctx context.Context, accountID int64, h string) error {
	if err := p.DB.WithContext(ctx).Exec("UPDATE accounts SET password_hash = ? WHERE id = ?", h, accountID).Error; err != nil {
		return fmt.Errorf("set password of account %d: %w", accountID, err)
	}
	return nil
}

// CampaignOwner returns the id of the researcher who created a campaign, or
// found=false when there is no such campaign.
func (p *People) CampaignOwner(ctx context.Context, id int64) (owner int64, found bool, err error) {
	err = p.DB.R.WithContext(ctx).Raw("SELECT researcher_id FROM campaigns WHERE id = ?", id).Row().Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("owner of campaign %d: %w", id, err)
	}
	return owner, true, nil
}

// CampaignOwners maps every campaign id to its researcher's id.
func (p *People) CampaignOwners(ctx context.Context) (map[int64]int64, error) {
	rows, err := p.DB.R.WithContext(ctx).Raw("SELECT id, researcher_id FROM campaigns").Rows()
	if err != nil {
		return nil, fmt.Errorf("campaign owners: %w", err)
	}
	defer rows.Close()
	m := map[int64]int64{}
	for rows.Next() {
		var id, owner int64
		if err := rows.Scan(&id, &owner); err != nil {
			return nil, fmt.Errorf("campaign owners: %w", err)
		}
		m[id] = owner
	}
	return m, rows.Err()
}

// MayAct reports whether the researcher may see and act on a campaign owned by owner.
func (r Researcher) MayAct(owner int64) bool { return r.Admin() || r.ID == owner }
