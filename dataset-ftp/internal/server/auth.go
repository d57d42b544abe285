package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	ftpserver "goftp.io/server/v2"
	"golang.org/x/crypto/bcrypt"
)

// dummyHash is compared against when the user is unknown, so a wrong user name costs
// as much time as a wrong password and names cannot be probed by timing.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("texgrid-no-such-user"), bcrypt.MinCost)

// Backoff slows down repeated bad passwords per client IP and per user name: after n
// consecutive failures the next answer waits min(Base*2^(n-1), Max). A success clears
// the count; a key idle for Forget is forgotten.
type Backoff struct {
	Base, Max, Forget time.Duration

	mu    sync.Mutex
	fails map[string]failure
	now   func() time.Time
}

type failure struct {
	n    int
	last time.Time
}

func newBackoff() *Backoff {
	return &Backoff{Base: 250 * time.Millisecond, Max: 8 * time.Second, Forget: 15 * time.Minute,
		fails: map[string]failure{}, now: time.Now}
}

// Delay returns how long to wait before answering a login for these keys.
func (b *Backoff) Delay(keys ...string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var d time.Duration
	for _, k := range keys {
		f, ok := b.fails[k]
		if !ok || f.n == 0 {
			continue
		}
		if now.Sub(f.last) > b.Forget {
			delete(b.fails, k)
			continue
		}
		kd := b.Base << min(f.n-1, 30)
		if kd > b.Max || kd <= 0 {
			kd = b.Max
		}
		d = max(d, kd)
	}
	return d
}

// Fail records a failed login for each key.
func (b *Backoff) Fail(keys ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		f := b.fails[k]
		f.n++
		f.last = b.now()
		b.fails[k] = f
	}
}

// Succeed clears the keys.
func (b *Backoff) Succeed(keys ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		delete(b.fails, k)
	}
}

// authenticator checks logins against the configured accounts.
type authenticator struct {
	accounts  map[string]*Account
	anonymous bool
	backoff   *Backoff
	log       *slog.Logger
	sleep     func(context.Context, time.Duration)
	ctx       context.Context // the server's lifetime; a shutdown cuts a backoff sleep short
	metrics   *metrics        // nil: not counted
}

// counted counts a login attempt by result ("ok" or "failed").
func (a *authenticator) counted(result string) {
	if a.metrics != nil {
		a.metrics.logins.WithLabelValues(result).Inc()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// CheckPasswd implements goftp's Auth.
func (a *authenticator) CheckPasswd(ctx *ftpserver.Context, user, pass string) (bool, error) {
	var sess *ftpserver.Session
	if ctx != nil {
		sess = ctx.Sess
	}
	ip := remoteIP(sess)
	if a.anonymous && isAnonymous(user) {
		a.log.Info("login", "user", AnonymousUser, "ip", ip)
		a.counted("ok")
		return true, nil
	}
	keys := []string{"ip:" + ip, "user:" + user}
	a.sleep(a.ctx, a.backoff.Delay(keys...))
	acct := a.accounts[user]
	hash := dummyHash
	if acct != nil {
		hash = []byte(acct.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(pass))
	if acct == nil || err != nil {
		a.backoff.Fail(keys...)
		reason := "bad password"
		if acct == nil {
			reason = "unknown user"
		}
		a.log.Warn("login refused", "user", user, "ip", ip, "reason", reason)
		a.counted("failed")
		return false, nil
	}
	a.backoff.Succeed(keys...)
	a.log.Info("login", "user", user, "ip", ip, "role", acct.Role)
	a.counted("ok")
	return true, nil
}

func isAnonymous(user string) bool { return user == AnonymousUser || user == "ftp" }

func remoteIP(sess *ftpserver.Session) string {
	if sess == nil {
		return ""
	}
	addr := sess.RemoteAddr()
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}
