package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/server"
)

// TestLoadConfig covers the shipped example, the precedence of flags over the file, and
// the files that must be refused.
func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name    string
		file    string
		args    []string // flags set on the command line
		check   func(c server.Config) bool
		wantErr string
	}{
		{name: "shipped example", file: filepath.Join("..", "..", "..", "configs", "project-server.example.json"),
			check: func(c server.Config) bool { return c.Addr == "127.0.0.1:8480" && c.FTPUser == "reader" }},
		{name: "flag beats file", file: write("a.json", `{"addr":"127.0.0.1:1111","ftp_user":"fileuser"}`),
			args:  []string{"--addr", "127.0.0.1:2222"},
			check: func(c server.Config) bool { return c.Addr == "127.0.0.1:2222" && c.FTPUser == "fileuser" }},
		{name: "defaults fill the rest", file: write("b.json", `{}`),
			check: func(c server.Config) bool { return c.Addr == "127.0.0.1:8480" && c.DataDir == "project-data" }},
		{name: "misspelt option", file: write("c.json", `{"adr":"x"}`), wantErr: `unknown field "adr"`},
		{name: "not JSON", file: write("d.json", `addr = 1`), wantErr: "invalid character"},
		{name: "missing file", file: filepath.Join(dir, "none.json"), wantErr: "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			var flags server.Config
			fs.StringVar(&flags.Addr, "addr", "", "")
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(fs, flags, c.file)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("loadConfig error = %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		format, level string
		json          bool
		debugShown    bool
		wantErr       string
	}{
		{"default text at info", "text", "info", false, false, ""},
		{"json at debug", "json", "debug", true, true, ""},
		{"json at warn hides info", "json", "warn", true, false, ""},
		{"unknown format", "xml", "info", false, false, `--log-format "xml": want text or json`},
		{"unknown level", "text", "loud", false, false, `--log-level "loud": want debug, info, warn or error`},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		log, err := newLogger(&buf, tc.format, tc.level)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		log.Debug("dbg")
		log.Error("boom", "k", "v")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if got := len(lines) == 2; got != tc.debugShown {
			t.Errorf("%s: wrote %q: debug line shown = %v, want %v", tc.name, buf.String(), got, tc.debugShown)
		}
		var v map[string]any
		if isJSON := json.Unmarshal([]byte(lines[len(lines)-1]), &v) == nil; isJSON != tc.json {
			t.Errorf("%s: last line %q is JSON = %v, want %v", tc.name, lines[len(lines)-1], isJSON, tc.json)
		}
	}
}
