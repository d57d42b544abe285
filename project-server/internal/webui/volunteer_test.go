package webui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/webui"
	"github.com/texgrid/texgrid/project-server/protocol"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// page is a browser-like HTTP client: cookies, no redirects followed.
type page struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (p *page) get(path string) (int, string) {
	p.t.Helper()
	resp, err := p.c.Get(p.base + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *page) post(path string, form url.Values) (int, string) {
	p.t.Helper()
	resp, err := p.c.PostForm(p.base+path, form)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// csrf loads a page and returns the token of its forms.
func (p *page) csrf(path string) string {
	p.t.Helper()
	_, body := p.get(path)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		p.t.Fatalf("%s has no CSRF field", path)
	}
	return m[1]
}

// TestVolunteerPages: the public pages on a real server: the project page, sign-up
// with every bad field refused next to it and nothing created, the account key shown
// once, the rate limit, the CSRF check, the leaderboard and a host page.
func TestVolunteerPages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := server.Open(context.Background(), server.Config{DataDir: dir, DB: filepath.Join(dir, "t.db"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	jar, _ := cookiejar.New(nil)
	p := &page{t: t, base: ts.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	accounts := func() int64 {
		var n int64
		if err := srv.DB.Raw("SELECT COUNT(*) FROM accounts").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}

	if code, body := p.get("/"); code != 200 || !strings.Contains(body, "How to join") || !strings.Contains(body, "volunteer-client attach --server "+ts.URL) {
		t.Fatalf("project page: %d\n%s", code, body)
	}
	tok := p.csrf("/join")
	cases := []struct {
		name, user, pw string
		status         int
		want           string // in the body
	}{
		{"empty name", "", "long enough password", 422, `id="name-error"`},
		{"short password", "ada", "short", 422, "use at least 10"},
		{"both bad", strings.Repeat("x", 101), "", 422, `id="password-error"`},
	}
	for _, tc := range cases {
		code, body := p.post("/join", url.Values{"csrf": {tok}, "name": {tc.user}, "password": {tc.pw}})
		if code != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: HTTP %d, want %d with %q", tc.name, code, tc.status, tc.want)
		}
	}
	if n := accounts(); n != 0 {
		t.Fatalf("refused sign-ups created %d accounts", n)
	}
	if code, _ := p.post("/join", url.Values{"name": {"ada"}, "password": {"long enough password"}}); code != http.StatusForbidden {
		t.Fatalf("sign-up without CSRF: HTTP %d, want 403", code)
	}
	if n := accounts(); n != 0 {
		t.Fatalf("a sign-up without CSRF created %d accounts", n)
	}
	var key string
	for i := 1; i <= webui.SignupsPerHour+1; i++ {
		code, body := p.post("/join", url.Values{"csrf": {tok}, "name": {"ada"}, "password": {"long enough password"}})
		if i <= webui.SignupsPerHour {
			m := regexp.MustCompile(`id="account-key">(tga_[0-9a-f]+)<`).FindStringSubmatch(body)
			if code != http.StatusCreated || m == nil {
				t.Fatalf("sign-up %d: HTTP %d\n%s", i, code, body)
			}
			key = m[1]
			continue
		}
		if code != http.StatusTooManyRequests || !strings.Contains(body, "try again later") {
			t.Fatalf("sign-up %d: HTTP %d, want 429", i, code)
		}
	}
	if n := accounts(); n != webui.SignupsPerHour {
		t.Fatalf("%d accounts, want %d", n, webui.SignupsPerHour)
	}
	// The key attaches a host, which then shows on the leaderboard and its own page.
	reg, err := srv.Sched.RegisterHost(context.Background(), &protocol.RegisterHostRequest{AccountKey: key, Name: "ada-laptop", OS: "linux", Arch: "amd64", Cores: 4})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := p.get("/leaderboard"); code != 200 || !strings.Contains(body, "ada-laptop") || !strings.Contains(body, `id="by-volunteer"`) {
		t.Fatalf("leaderboard: %d\n%s", code, body)
	}
	hostCases := []struct {
		path   string
		status int
		want   string
	}{
		{"/hosts/" + itoa(reg.HostID), 200, "4 cores"},
		{"/hosts/9999", 404, "no host 9999"},
		{"/hosts/x", 404, "not a host number"},
	}
	for _, hc := range hostCases {
		if code, body := p.get(hc.path); code != hc.status || !strings.Contains(body, hc.want) {
			t.Errorf("%s: HTTP %d, want %d with %q", hc.path, code, hc.status, hc.want)
		}
	}
	// Researcher pages send signed-out visitors to sign-in.
	for _, path := range []string{"/campaigns", "/campaigns/new", "/campaigns/1"} {
		resp, err := p.c.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/signin?next=") {
			t.Errorf("signed-out %s: HTTP %d to %q, want 303 to the sign-in page", path, resp.StatusCode, loc)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
