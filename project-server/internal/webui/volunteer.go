package webui

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/texgrid/texgrid/project-server/internal/api"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// The public pages: the project page, volunteer sign-up, leaderboards, host pages.

// serverURL is the address volunteers attach to, as the browser reached this server.
func serverURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

type homeData struct {
	Status  protocol.Status
	Running []listRow
	URL     string
}

func (h *Handler) home(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	me, _ := h.session(r)
	d := homeData{URL: serverURL(r), Status: protocol.Status{ServerVersion: api.ServerVersion, ProtocolVersion: protocol.Version,
		MinProtocol: protocol.MinVersion}}
	cs, err := h.cfg.Sched.Campaigns(ctx)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	d.Status.Campaigns = len(cs)
	hosts, err := api.Hosts(ctx, h.cfg.Sched.DB())
	if err != nil {
		h.internal(w, r, err)
		return
	}
	d.Status.Hosts = len(hosts)
	for _, c := range cs {
		if c.State != protocol.StateRunning {
			continue
		}
		row := listRow{C: c}
		rs, err := h.cfg.Sched.Rounds(ctx, c.ID)
		if err != nil {
			h.internal(w, r, err)
			return
		}
		for _, rd := range rs {
			if rd.Metrics != nil {
				row.Acc, row.HasAcc = rd.Metrics.ImageAccuracy, true
			}
		}
		d.Running = append(d.Running, row)
	}
	h.render(w, r, http.StatusOK, "home", "Project", me, d)
}

type joinData struct {
	Name, Key, URL string
	Errors         map[string]string
}

func (h *Handler) join(w http.ResponseWriter, r *http.Request) {
	me, _ := h.session(r)
	h.render(w, r, http.StatusOK, "join", "Join", me, joinData{Errors: map[string]string{}})
}

// clientIP is the address a sign-up is counted against.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// SignupsPerHour bounds the volunteer accounts one client address may create.
const SignupsPerHour = 5

// createAccount makes a volunteer account with a password and shows its account key
// once. Every field is checked before anything is written.
func (h *Handler) createAccount(w http.ResponseWriter, r *http.Request) {
	me, _ := h.session(r)
	name, pw := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	d := joinData{Name: name, Errors: map[string]string{}}
	if n := utf8.RuneCountInString(name); n < 1 || n > 100 {
		d.Errors["name"] = fmt.Sprintf("The name has %d characters; use 1 to 100.", n)
	}
	if err := auth.CheckPasswordRules(pw); err != nil {
		d.Errors["password"] = "The password " + strings.TrimPrefix(err.Error(), auth.ErrBadPassword.Error()+": ") + "."
	}
	if len(d.Errors) > 0 {
		h.render(w, r, http.StatusUnprocessableEntity, "join", "Join", me, d)
		return
	}
	if !h.signups.allow(clientIP(r), time.Now()) {
		w.Header().Set("Retry-After", "3600")
		d.Errors["form"] = fmt.Sprintf("This address has created %d accounts in the last hour; try again later.", SignupsPerHour)
		h.render(w, r, http.StatusTooManyRequests, "join", "Join", me, d)
		return
	}
	hash, err := auth.HashPassword(pw)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	id, key, err := h.cfg.Sched.AddAccount(r.Context(), name)
	if err == nil {
		err = h.people.SetAccountPasswordHash(r.Context(), id, hash)
	}
	if err != nil {
		h.internal(w, r, err)
		return
	}
	d.Key, d.URL = key, serverURL(r)
	h.render(w, r, http.StatusCreated, "join", "Join", me, d)
}

type accountRow struct {
	Name   string
	Hosts  int
	Credit float64
}

type leaderData struct {
	Accounts []accountRow
	Hosts    []protocol.HostSummary
}

func (h *Handler) leaderboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	me, _ := h.session(r)
	var d leaderData
	var err error
	if d.Accounts, err = h.accountCredit(ctx); err != nil {
		h.internal(w, r, err)
		return
	}
	hosts, err := api.Hosts(ctx, h.cfg.Sched.DB())
	if err != nil {
		h.internal(w, r, err)
		return
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Credit > hosts[j].Credit })
	d.Hosts = hosts
	h.render(w, r, http.StatusOK, "leaderboard", "Leaderboard", me, d)
}

func (h *Handler) accountCredit(ctx context.Context) ([]accountRow, error) {
	rows, err := h.cfg.Sched.DB().R.WithContext(ctx).Raw(`SELECT a.name, COUNT(h.id), COALESCE(SUM(h.credit), 0)
		FROM accounts a JOIN hosts h ON h.account_id = a.id GROUP BY a.id, a.name ORDER BY 3 DESC, a.id`).Rows()
	if err != nil {
		return nil, fmt.Errorf("credit by volunteer: %w", err)
	}
	defer rows.Close()
	var out []accountRow
	for rows.Next() {
		var a accountRow
		if err := rows.Scan(&a.Name, &a.Hosts, &a.Credit); err != nil {
			return nil, fmt.Errorf("credit by volunteer: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

type hostData struct {
	store.Host
	Account string
}

func (h *Handler) hostPage(w http.ResponseWriter, r *http.Request) {
	me, _ := h.session(r)
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(w, r, http.StatusNotFound, "No such host", fmt.Sprintf("Host %q is not a host number.", r.PathValue("id")))
		return
	}
	host, err := h.cfg.Sched.HostInfo(r.Context(), id)
	if err != nil {
		h.fail(w, r, http.StatusNotFound, "No such host", fmt.Sprintf("There is no host %d.", id))
		return
	}
	d := hostData{Host: *host}
	if err := h.cfg.Sched.DB().R.WithContext(r.Context()).Raw("SELECT name FROM accounts WHERE id = ?", host.AccountID).Row().Scan(&d.Account); err != nil {
		h.internal(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "host", "Host "+host.Name, me, d)
}

// limiter allows n events per key per window.
type limiter struct {
	mu     sync.Mutex
	n      int
	window time.Duration
	seen   map[string][]time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{n: n, window: window, seen: map[string][]time.Time{}}
}

// full reports whether key has used up its events in the window ending at now,
// without recording one.
func (l *limiter) full(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.seen[key] {
		if now.Sub(t) < l.window {
			n++
		}
	}
	return n >= l.n
}

// allow records an event for key at now and reports whether it is within the limit.
// Keys with no event inside the window are forgotten, so memory stays bounded by the
// recent callers.
func (l *limiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, ts := range l.seen {
		if len(ts) > 0 && now.Sub(ts[len(ts)-1]) >= l.window {
			delete(l.seen, k)
		}
	}
	keep := l.seen[key][:0]
	for _, t := range l.seen[key] {
		if now.Sub(t) < l.window {
			keep = append(keep, t)
		}
	}
	if len(keep) >= l.n {
		l.seen[key] = keep
		return false
	}
	l.seen[key] = append(keep, now)
	return true
}
