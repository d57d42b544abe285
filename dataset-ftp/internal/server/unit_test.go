package server

import (
	"context"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestBackoffGrowsAndResets(t *testing.T) {
	t.Parallel()
	b := newBackoff()
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	want := []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		if d := b.Delay("ip:1.2.3.4", "user:x"); d != w {
			t.Errorf("after %d failures: delay %v, want %v", i, d, w)
		}
		b.Fail("ip:1.2.3.4", "user:x")
	}
	if d := b.Delay("ip:5.6.7.8", "user:x"); d != 8*time.Second {
		t.Errorf("same user from another IP: %v, want the user's 8s", d)
	}
	b.Succeed("ip:1.2.3.4", "user:x")
	if d := b.Delay("ip:1.2.3.4", "user:x"); d != 0 {
		t.Errorf("after success: %v", d)
	}
	b.Fail("user:y")
	now = now.Add(b.Forget + time.Second)
	if d := b.Delay("user:y"); d != 0 {
		t.Errorf("after the forget window: %v", d)
	}
}

// TestAuthenticatorSlowsRepeatedFailures checks CheckPasswd waits before answering a
// user with recent failures and never accepts a wrong password or an unknown user.
func TestAuthenticatorSlowsRepeatedFailures(t *testing.T) {
	t.Parallel()
	h, _ := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	var slept []time.Duration
	a := &authenticator{accounts: map[string]*Account{"u": {Name: "u", Role: RoleReader, PasswordHash: string(h)}},
		backoff: newBackoff(), log: slog.New(slog.DiscardHandler), ctx: context.Background(),
		sleep: func(_ context.Context, d time.Duration) { slept = append(slept, d) }}
	cases := []struct {
		name, user, pass string
		ok               bool
		sleep            time.Duration
	}{
		{"first wrong", "u", "wrong", false, 0},
		{"second wrong", "u", "wrong", false, 250 * time.Millisecond},
		{"unknown user", "nobody", "right", false, 500 * time.Millisecond}, // same IP key
		{"right after failures", "u", "right", true, time.Second},
		{"right again", "u", "right", true, 0},
	}
	for _, tc := range cases {
		slept = nil
		ok, err := a.CheckPasswd(nil, tc.user, tc.pass)
		if err != nil || ok != tc.ok {
			t.Errorf("%s: ok=%v err=%v, want ok=%v", tc.name, ok, err, tc.ok)
		}
		if len(slept) != 1 || slept[0] != tc.sleep {
			t.Errorf("%s: slept %v, want %v", tc.name, slept, tc.sleep)
		}
	}
}

func TestEscapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cwd, raw string
		want     bool
	}{
		{"/", "a/b", false},
		{"/", "..", true},
		{"/ds", "..", false},
		{"/ds", "../..", true},
		{"/ds/c", "../../x", false},
		{"/ds/c", "../../../etc/passwd", true},
		{"/ds", "/../etc", true},
		{"/ds", "/etc/passwd", false},
		{"/ds", "c/./../../ds", false},
		{"/", `..\..\x`, true},
	}
	for _, tc := range cases {
		if got := escapes(tc.cwd, tc.raw); got != tc.want {
			t.Errorf("escapes(%q, %q) = %v, want %v", tc.cwd, tc.raw, got, tc.want)
		}
	}
}

// FuzzEscapes: whenever escapes says a path stays inside, cleaning it from the working
// folder never yields a path that goftp would have clamped (so nothing is silently
// rewritten), and a path with no ".." never escapes.
func FuzzEscapes(f *testing.F) {
	for _, s := range []string{"a", "..", "../x", "a/../..", "/a/b", "./.", `a\..\..`} {
		f.Add("/ds/c", s)
	}
	f.Fuzz(func(t *testing.T, cwd, raw string) {
		cwd = path.Clean("/" + cwd)
		esc := escapes(cwd, raw)
		if !strings.Contains(raw, "..") && esc {
			t.Fatalf("escapes(%q, %q) without ..", cwd, raw)
		}
		if esc {
			return
		}
		base := cwd
		if strings.HasPrefix(raw, "/") {
			base = "/"
		}
		// Resolving lexically without clamping must stay at or below "/".
		depth := strings.Count(strings.Trim(base, "/"), "/") + 1
		if strings.Trim(base, "/") == "" {
			depth = 0
		}
		for _, p := range strings.Split(strings.ReplaceAll(raw, `\`, "/"), "/") {
			switch p {
			case "", ".":
			case "..":
				depth--
			default:
				depth++
			}
			if depth < 0 {
				t.Fatalf("escapes(%q, %q) = false but the path climbs above /", cwd, raw)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	good := func() Config {
		c := Defaults()
		c.Root = root
		c.Accounts = []Account{{Name: "a", Role: RoleUploader, PasswordHash: string(h), Datasets: []string{"*"}}}
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		errHas string
	}{
		{"valid", func(*Config) {}, ""},
		{"missing root", func(c *Config) { c.Root = filepath.Join(root, "nope") }, "not a directory"},
		{"plain password", func(c *Config) { c.Accounts[0].PasswordHash = "hunter2" }, "not a bcrypt hash"},
		{"bad role", func(c *Config) { c.Accounts[0].Role = "admin" }, "role"},
		{"duplicate account", func(c *Config) { c.Accounts = append(c.Accounts, c.Accounts[0]) }, "twice"},
		{"reserved name", func(c *Config) { c.Accounts[0].Name = "anonymous" }, "reserved"},
		{"bad ports", func(c *Config) { c.PassivePorts = "3000-2000" }, "passive_ports"},
		{"tls required without cert", func(c *Config) { c.TLSRequired = true }, "tls_required"},
		{"cert without key", func(c *Config) { c.CertFile = "x.pem" }, "go together"},
		{"bad dataset grant", func(c *Config) { c.Accounts[0].Datasets = []string{"../x"} }, "bad dataset"},
		{"bad test fraction", func(c *Config) { c.TestFraction = 1 }, "test_fraction"},
	}
	for _, tc := range cases {
		c := good()
		tc.mutate(&c)
		err := c.Validate()
		if tc.errHas == "" && err != nil || tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("%s: %v, want error containing %q", tc.name, err, tc.errHas)
		}
	}
}

func TestLoadConfigRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(p, []byte(`{"root": "/tmp", "max_uplaod_bytes": 5}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "max_uplaod_bytes") {
		t.Errorf("LoadConfig: %v, want the misspelt field named", err)
	}
	if err := os.WriteFile(p, []byte(`{"root": "/tmp", "index_delay": "1.5s", "idle_timeout": 30}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil || time.Duration(c.IndexDelay) != 1500*time.Millisecond || time.Duration(c.IdleTimeout) != 30*time.Second {
		t.Errorf("durations: %+v %v", c, err)
	}
}

// TestExampleConfig keeps configs/dataset-ftp.example.json loadable: every field known,
// and valid once its root exists and its TLS files are provided.
func TestExampleConfig(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(filepath.Join("..", "..", "..", "configs", "dataset-ftp.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	c.Root = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Errorf("example config: %v", err)
	}
	if len(c.Accounts) == 0 || !c.TLSRequired {
		t.Errorf("example config lost its accounts or TLS: %+v", c)
	}
}
