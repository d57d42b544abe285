package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/trainer/data"
)

func writeManifest(t *testing.T, root string) {
	m := &manifest.Manifest{Dataset: "tex", TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"a", "b"} {
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("%d.png", i)
			sum := sha256.Sum256([]byte(cls + name))
			m.Images = append(m.Images, manifest.Image{Path: cls + "/" + name, Class: cls, Size: 1,
				SHA256: hex.EncodeToString(sum[:]), Width: 32, Height: 32, Split: data.SplitOf(cls, name, 0.2)})
		}
	}
	m.Finish()
	os.MkdirAll(filepath.Join(root, "tex"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "tex", manifest.FileName), m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestCommands: researcher add prints a token that the campaign commands then use
// against a running server through the JSON API.
func TestCommands(t *testing.T) {
	dir, dsRoot := t.TempDir(), t.TempDir()
	writeManifest(t, dsRoot)
	dbPath := filepath.Join(dir, "texgrid.db")
	tok, stderr, code := run(t, "researcher", "add", "--name", "ada", "--db", dbPath)
	tok = strings.TrimSpace(tok)
	if code != 0 || !strings.HasPrefix(tok, "tgr_") {
		t.Fatalf("researcher add: code %d, stdout %q, stderr %q", code, tok, stderr)
	}
	key, _, code := run(t, "account", "add", "--name", "vol", "--db", dbPath)
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(key), "tga_") {
		t.Fatalf("account add: code %d, %q", code, key)
	}
	srv, err := server.Open(context.Background(), server.Config{DataDir: dir, DB: dbPath, ModelsDir: "testdata/models",
		Datasets: datasets.Dir{Root: dsRoot}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	common := []string{"--server", ts.URL, "--token", tok}
	out := t.TempDir()
	img := image.NewGray(image.Rect(0, 0, 40, 40))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, img); err != nil {
		t.Fatal(err)
	}
	imgPath, notImg := filepath.Join(out, "tex.png"), filepath.Join(out, "notes.txt")
	if err := os.WriteFile(imgPath, pngBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notImg, []byte("not an image"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"create", append([]string{"campaign", "create", "--name", "cli-test", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--wus", "4", "--rounds", "2", "--quorum", "0.75"}, common...), 0, "cli-test"},
		{"list", append([]string{"campaign", "list"}, common...), 0, "draft"},
		{"start", append([]string{"campaign", "start", "1"}, common...), 0, "running"},
		{"show", append([]string{"campaign", "show", "1"}, common...), 0, `"quorum": 0.75`},
		{"rounds", append([]string{"campaign", "rounds", "1"}, common...), 0, "open"},
		{"model as ONNX", append([]string{"campaign", "model", "1", "-o", filepath.Join(out, "m.onnx")}, common...), 0, "bytes"},
		{"model without -o", append([]string{"campaign", "model", "1"}, common...), 1, "usage"},
		{"model in an unknown format", append([]string{"campaign", "model", "1", "--format", "pt", "-o", filepath.Join(out, "m.pt")}, common...), 1, `format "pt"`},
		{"classify", append([]string{"campaign", "classify", "1", imgPath}, common...), 0, "fragments"},
		{"classify a text file", append([]string{"campaign", "classify", "1", notImg}, common...), 1, "not a PNG or JPEG"},
		{"start twice", append([]string{"campaign", "start", "1"}, common...), 1, "cannot start"},
		{"stop", append([]string{"campaign", "stop", "1"}, common...), 0, "stopped"},
		{"unknown campaign", append([]string{"campaign", "show", "42"}, common...), 1, "does not exist"},
		{"bad quorum", append([]string{"campaign", "create", "--name", "x", "--dataset", "tex", "--model", "tiny", "--quorum", "0.5"}, common...), 1, "quorum"},
		{"lr decay", append([]string{"campaign", "create", "--name", "decay", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--lr", "0.02", "--lr-decay", "0.5", "--json"}, common...), 0, `"lr_decay": 0.5`},
		{"bad lr decay", append([]string{"campaign", "create", "--name", "x", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--lr-decay", "1.5"}, common...), 1, "hyper.lr_decay 1.5 must be in (0, 1]"},
		{"async", append([]string{"campaign", "create", "--name", "async", "--dataset", "tex", "--model", "tiny", "--fragment-size", "16",
			"--mode", "async", "--buffer-size", "3", "--staleness-exponent", "0.7", "--max-staleness", "5", "--eval-every", "2",
			"--server-optimizer", "momentum", "--server-lr", "0.8", "--server-momentum", "0.6", "--json"}, common...), 0,
			`"buffer_size": 3,
    "staleness_exponent": 0.7,
    "max_staleness": 5,
    "eval_every": 2,
    "server_optimizer": "momentum",
    "server_lr": 0.8,
    "server_momentum": 0.6`},
		{"async option on a sync campaign", append([]string{"campaign", "create", "--name", "x", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--buffer-size", "3"}, common...), 1, "belong to mode"},
		{"max results per account", append([]string{"campaign", "create", "--name", "bounded", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--wus", "4", "--max-results-per-account", "2", "--json"}, common...), 0, `"max_results_per_account": 2`},
		{"negative max results per account", append([]string{"campaign", "create", "--name", "x", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--wus", "4", "--max-results-per-account", "-1"}, common...), 1, "max_results_per_account -1 is outside 0..work_units_per_round (4)"},
		{"max results per account over the units", append([]string{"campaign", "create", "--name", "x", "--dataset", "tex", "--model", "tiny",
			"--fragment-size", "16", "--wus", "4", "--max-results-per-account", "5"}, common...), 1, "max_results_per_account 5 is outside"},
		{"rounds show duplicates", append([]string{"campaign", "rounds", "1"}, common...), 0, "DUPLICATE"},
		{"no token", []string{"campaign", "list", "--server", ts.URL, "--token", ""}, 1, "researcher token"},
		{"wrong token", []string{"campaign", "list", "--server", ts.URL, "--token", "tgr_nope"}, 1, "unknown researcher token"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tc := range cases {
		out, errOut, code := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Fatalf("%s: code %d (want %d), output %q %q, want it to contain %q", tc.name, code, tc.code, out, errOut, tc.want)
		}
	}
}

// TestSecondServerRefused: a second server on the same data directory fails clearly.
func TestSecondServerRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := server.Config{DataDir: dir, ModelsDir: "testdata/models", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := server.Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on one data dir: %v", err)
	}
}
