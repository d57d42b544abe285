// Package webui serves the project server's web pages: researcher sign-in and
// sign-out, the campaigns list, the new-campaign form, the campaign page with its live
// chart, and the public volunteer pages. Pages are html/template files embedded from
// web/; handlers read through the scheduler and the store like the JSON API does and
// hold no state of their own beyond the database.
//
// Security: a researcher signs in with a name and password and gets a session cookie
// (HttpOnly, SameSite=Strict, Secure unless served over plain HTTP on loopback). Every
// form carries a CSRF token that must equal the tg_csrf cookie (double submit, so it
// also guards the sign-in and volunteer forms); a POST without it is refused with 403.
// A researcher sees and acts only on their own campaigns; an admin on every one.
package webui

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/web"
)

// Cookie names.
const (
	SessionCookie = "tg_session"
	CSRFCookie    = "tg_csrf"
)

// Config is what the pages need from the server.
type Config struct {
	Sched    *scheduler.Scheduler
	Datasets datasets.Source // for the dataset table of the new-campaign form; may be nil
	Engine   eval.Engine     // for "try the model"; nil means the Go engine
	Log      *slog.Logger
	// Poll is how often the live chart's event stream looks for new rounds (default
	// 500ms, so a closed round shows within about a second).
	Poll time.Duration
}

// Handler serves the pages.
type Handler struct {
	cfg    Config
	people *auth.People
	pages  map[string]*template.Template
	mux    *http.ServeMux
	static http.Handler
	// signups limits volunteer account creation per client address; failedSignIns
	// the wrong passwords one address may try.
	signups, failedSignIns *limiter
	// done is closed by Shutdown; event streams end when it is.
	done     chan struct{}
	shutdown sync.Once
}

// Shutdown ends the open event streams, so a graceful server shutdown does not wait
// for browsers that keep a campaign page open. Register it with
// http.Server.RegisterOnShutdown.
func (h *Handler) Shutdown() { h.shutdown.Do(func() { close(h.done) }) }

// New parses the embedded templates and returns the page handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	h := &Handler{cfg: cfg, people: &auth.People{DB: cfg.Sched.DB()}, pages: map[string]*template.Template{},
		mux: http.NewServeMux(), signups: newLimiter(SignupsPerHour, time.Hour),
		failedSignIns: newLimiter(FailedSignInsPer15Min, 15*time.Minute), done: make(chan struct{})}
	funcs := template.FuncMap{
		"pct":   func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) },
		"title": func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
		"inc":   func(i int) int { return i + 1 },
	}
	names, err := fs.Glob(web.FS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(web.FS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("webui: template %s: %w", n, err)
		}
		h.pages[base] = t
	}
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		return nil, fmt.Errorf("webui: %w", err)
	}
	h.static = http.StripPrefix("/static/", http.FileServerFS(static))
	h.routes()
	return h, nil
}

func (h *Handler) routes() {
	m := h.mux
	m.Handle("GET /static/", h.static)
	m.HandleFunc("GET /{$}", h.home)
	m.HandleFunc("GET /join", h.join)
	m.HandleFunc("POST /join", h.createAccount)
	m.HandleFunc("GET /leaderboard", h.leaderboard)
	m.HandleFunc("GET /hosts/{id}", h.hostPage)
	m.HandleFunc("GET /signin", h.signinPage)
	m.HandleFunc("POST /signin", h.signin)
	m.HandleFunc("POST /signout", h.signout)
	m.HandleFunc("GET /campaigns", h.researcher(h.campaigns))
	m.HandleFunc("GET /campaigns/new", h.researcher(h.newCampaign))
	m.HandleFunc("POST /campaigns/new", h.researcher(h.createCampaign))
	m.HandleFunc("GET /campaigns/{id}", h.researcher(h.owned(h.campaign)))
	m.HandleFunc("GET /campaigns/{id}/events", h.researcher(h.owned(h.events)))
	m.HandleFunc("GET /campaigns/{id}/model", h.researcher(h.owned(h.model)))
	m.HandleFunc("POST /campaigns/{id}/classify", h.researcher(h.owned(h.classify)))
	m.HandleFunc("POST /campaigns/{id}/{action}", h.researcher(h.owned(h.act)))
}

// ServeHTTP checks the CSRF token of every POST, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
	if r.Method == http.MethodPost && !h.csrfOK(r) {
		h.fail(w, r, http.StatusForbidden, "Refused", "The form's CSRF token is missing or does not match: reload the page and submit the form again.")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// page is what every template gets.
type page struct {
	Title string
	Me    *auth.Researcher
	CSRF  string
	D     any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title string, me *auth.Researcher, d any) {
	t := h.pages[name]
	if t == nil {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	p := page{Title: title, Me: me, CSRF: h.csrfToken(w, r), D: d}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		h.cfg.Log.Error("render page", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders the error page with a sentence saying what went wrong.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	me, _ := h.session(r)
	h.render(w, r, status, "error", title, me, msg)
}

// secure reports whether cookies should carry the Secure flag: always, except over
// plain HTTP to a loopback address, where browsers would drop or not send them.
func secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(CSRFCookie); err == nil && strings.HasPrefix(c.Value, "tgc_") && len(c.Value) == 68 {
		return c.Value
	}
	tok, _, err := auth.New("tgc_")
	if err != nil {
		return ""
	}
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: tok, Path: "/", HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode})
	return tok
}

// csrfOK compares the form's csrf field with the cookie in constant time.
func (h *Handler) csrfOK(r *http.Request) bool {
	c, err := r.Cookie(CSRFCookie)
	if err != nil || c.Value == "" {
		return false
	}
	r.Body = http.MaxBytesReader(nil, r.Body, protocol.MaxClassifyBytes+1<<20)
	form := r.PostFormValue("csrf")
	return form != "" && subtle.ConstantTimeCompare([]byte(form), []byte(c.Value)) == 1
}

// session returns the signed-in researcher, if any.
func (h *Handler) session(r *http.Request) (*auth.Researcher, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil, err
	}
	me, err := h.people.Session(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	return &me, nil
}

type researcherHandler func(w http.ResponseWriter, r *http.Request, me *auth.Researcher)

// researcher sends visitors without a session to the sign-in page, then back.
func (h *Handler) researcher(next researcherHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		me, err := h.session(r)
		if err != nil {
			if r.Method != http.MethodGet {
				h.fail(w, r, http.StatusUnauthorized, "Signed out", "Your session has ended: sign in again.")
				return
			}
			http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		next(w, r, me)
	}
}

func (h *Handler) signinPage(w http.ResponseWriter, r *http.Request) {
	next := r.URL.Query().Get("next")
	if _, err := h.session(r); err == nil {
		http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
		return
	}
	h.render(w, r, http.StatusOK, "signin", "Sign in", nil, signinData{Next: next})
}

type signinData struct{ Next, Name, Error string }

// safeNext keeps a redirect target on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/campaigns"
	}
	return next
}

// FailedSignInsPer15Min bounds the wrong passwords one client address may try.
const FailedSignInsPer15Min = 10

func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	name, pw, next := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password"), r.PostFormValue("next")
	if h.failedSignIns.full(clientIP(r), time.Now()) {
		w.Header().Set("Retry-After", "900")
		h.render(w, r, http.StatusTooManyRequests, "signin", "Sign in", nil, signinData{Next: next, Name: name,
			Error: fmt.Sprintf("%d failed sign-ins from this address in 15 minutes: wait, then try again.", FailedSignInsPer15Min)})
		return
	}
	me, err := h.people.SignIn(r.Context(), name, pw)
	if err != nil {
		msg := "Unknown name or wrong password."
		if errors.Is(err, auth.ErrBadSignIn) {
			h.failedSignIns.allow(clientIP(r), time.Now())
		} else {
			h.cfg.Log.Error("sign-in", "err", err)
			msg = "Signing in failed on the server; try again."
		}
		h.render(w, r, http.StatusUnauthorized, "signin", "Sign in", nil, signinData{Next: next, Name: name, Error: msg})
		return
	}
	secret, exp, err := h.people.NewSession(r.Context(), me.ID)
	if err != nil {
		h.cfg.Log.Error("new session", "err", err)
		h.fail(w, r, http.StatusInternalServerError, "Sign-in failed", "The server could not start a session; try again.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: secret, Path: "/", Expires: exp, HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

func (h *Handler) signout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		if err := h.people.EndSession(r.Context(), c.Value); err != nil {
			h.cfg.Log.Error("sign-out", "err", err)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}
