package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/poll"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPasswd(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, stdin string
		code        int
	}{
		{"password with newline", "correct horse\n", 0},
		{"password without newline", "battery staple", 0},
		{"empty", "\n", 1},
		{"no input", "", 1},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := Run(context.Background(), []string{"passwd", "--cost", "4"}, strings.NewReader(tc.stdin), &out, &errb)
		if code != tc.code {
			t.Errorf("%s: exit %d (%s), want %d", tc.name, code, errb.String(), tc.code)
			continue
		}
		if code == 0 {
			hash := strings.TrimSpace(out.String())
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(strings.TrimRight(tc.stdin, "\n"))); err != nil {
				t.Errorf("%s: printed hash does not match: %v", tc.name, err)
			}
			if strings.Contains(out.String(), strings.TrimSpace(tc.stdin)) {
				t.Errorf("%s: the password was echoed", tc.name)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"frobnicate"}, 2},
		{"index without root", []string{"index"}, 1},
		{"upload without user", []string{"upload", "dir"}, 1},
		{"serve with a missing config", []string{"serve", "--config", "/nonexistent.json"}, 1},
		{"serve without root", []string{"serve"}, 1},
		{"help", []string{"help"}, 0},
		{"serve with an unknown log format", []string{"serve", "--root", ".", "--log-format", "xml"}, 1},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		if code := Run(context.Background(), tc.args, strings.NewReader(""), &out, &errb); code != tc.code {
			t.Errorf("%s: exit %d, want %d (%s)", tc.name, code, tc.code, errb.String())
		}
	}
}

// TestServeUploadIndex runs the real commands: serve from a config file (with a flag
// overriding it), upload a small tree, wait for the automatic manifest, then index by
// hand.
func TestServeUploadIndex(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "dataset-ftp.json")
	cfg := fmt.Sprintf(`{"root": %q, "listen": "127.0.0.1:1", "index_delay": "100ms",
		"accounts": [{"name": "up", "role": "uploader", "password_hash": %q, "datasets": ["*"]}]}`, root, hash)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveErr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"serve", "--config", cfgPath, "--listen", "127.0.0.1:0"}, strings.NewReader(""), &serveErr, &serveErr)
	}()
	addrRE := regexp.MustCompile(`msg=serving addr=(127\.0\.0\.1:\d+)`)
	var addr string
	poll.For(t, 10*time.Second, "the server to start", func() error {
		m := addrRE.FindStringSubmatch(serveErr.String())
		if m == nil {
			return fmt.Errorf("log so far: %s", serveErr.String())
		}
		addr = m[1]
		return nil
	})

	src := filepath.Join(t.TempDir(), "tiny")
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")
	for _, rel := range []string{"a/1.png", "a/2.png", "b/3.png"} {
		p := filepath.Join(src, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if code := Run(ctx, []string{"upload", "--addr", addr, "--user", "up", "--password", "pw", src}, nil, &out, &errb); code != 0 {
		t.Fatalf("upload exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "sent 3 files") || !strings.Contains(errb.String(), "upload tiny") {
		t.Errorf("upload output %q, progress %q", out.String(), errb.String())
	}
	mpath := filepath.Join(root, "tiny", manifest.FileName)
	var m *manifest.Manifest
	poll.For(t, 20*time.Second, "a manifest with 3 images at "+mpath, func() error {
		b, err := os.ReadFile(mpath)
		if err != nil {
			return err
		}
		if m, err = manifest.Parse(b); err != nil {
			return err
		}
		if len(m.Images) != 3 {
			return fmt.Errorf("%d images", len(m.Images))
		}
		return nil
	})
	out.Reset()
	if code := Run(ctx, []string{"index", "--root", root, "tiny"}, nil, &out, &errb); code != 0 {
		t.Fatalf("index exit %d: %s", code, errb.String())
	}
	if want := "tiny: 3 images in 2 classes, 0 quarantined, version " + m.Version; !strings.Contains(out.String(), want) {
		t.Errorf("index printed %q, want %q", out.String(), want)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exit %d: %s", code, serveErr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestLogFormat(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		format  string
		json    bool
		wantErr string
	}{
		{"text for humans", "text", false, ""},
		{"json for collectors", "json", true, ""},
		{"unknown format", "xml", false, `--log-format "xml": want text or json`},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		log, err := formatLogger(&buf, false, tc.format)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		log.Info("login", "user", "u")
		var v map[string]any
		if isJSON := json.Unmarshal(buf.Bytes(), &v) == nil; isJSON != tc.json || (tc.json && v["user"] != "u") {
			t.Errorf("%s: wrote %q", tc.name, buf.String())
		}
	}
}
