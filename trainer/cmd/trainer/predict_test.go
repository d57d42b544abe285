package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/ort"
)

// requireORTCmd skips when ONNX Runtime is missing, unless TEXGRID_REQUIRE_ORT=1.
func requireORTCmd(t *testing.T) {
	t.Helper()
	if err := ort.Available(); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_ORT") == "1" {
			t.Fatal(err)
		}
		t.Skipf("skipping, ONNX Runtime missing: %v", err)
	}
}

// predictFixture exports random tcnn-small weights for the Kylberg classes at 128 px.
func predictFixture(t *testing.T) (model []byte, ds string) {
	t.Helper()
	ds = kylberg(t)
	dir := t.TempDir()
	weights, _ := exportFixture(t, dir, 6, 128)
	out := filepath.Join(dir, "m.onnx")
	if err := runExport(context.Background(), []string{"--model", "tcnn-small", "--weights", weights,
		"--classes-from", ds, "--size", "128", "-o", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, ds
}

func TestPredictImages(t *testing.T) {
	t.Parallel()
	model, ds := predictFixture(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.png")
	os.WriteFile(corrupt, []byte("\x89PNG\r\n\x1a\nbroken"), 0o644)
	folder := filepath.Join(ds, "canvas1") // a folder, not an image
	images := []string{
		filepath.Join(ds, "canvas1", "canvas1-a-p001.png"),
		corrupt,
		folder,
		filepath.Join(ds, "stone1", "stone1-a-p001.png"),
	}
	results := map[string][]prediction{}
	for _, engine := range []string{engineORT, engineGo} {
		t.Run(engine, func(t *testing.T) {
			if engine == engineORT {
				requireORTCmd(t)
			}
			c, err := openClassifier(model, engine, 2, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.engine != engine || c.size != 128 || len(c.classes) != 6 {
				t.Fatalf("classifier on %s, %d px, classes %v", c.engine, c.size, c.classes)
			}
			var stdout, stderr bytes.Buffer
			failed := predictImages(context.Background(), c, images, 0, false, &stdout, &stderr)
			if failed != 2 {
				t.Errorf("%d failed, want 2; stderr:\n%s", failed, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], images[0]+"\t") || !strings.HasPrefix(lines[1], images[3]+"\t") {
				t.Fatalf("stdout:\n%s", stdout.String())
			}
			for _, l := range lines {
				f := strings.Split(l, "\t")
				if len(f) != 3 || !contains(c.classes, f[1]) {
					t.Errorf("line %q: want IMAGE<TAB>CLASS<TAB>PROB with a class from the model", l)
				}
			}
			if !strings.Contains(stderr.String(), corrupt+": ") || !strings.Contains(stderr.String(), folder+": ") {
				t.Errorf("stderr does not name both failed images:\n%s", stderr.String())
			}

			stdout.Reset()
			if failed := predictImages(context.Background(), c, images[:2], 64, true, &stdout, &stderr); failed != 1 {
				t.Errorf("json: %d failed", failed)
			}
			dec := json.NewDecoder(&stdout)
			var p1, p2 prediction
			if err := dec.Decode(&p1); err != nil || dec.Decode(&p2) != nil {
				t.Fatalf("json lines: %v\n%s", err, stdout.String())
			}
			var sum float32
			for _, v := range p1.Probs {
				sum += v
			}
			// 576 px image, 128 px fragments, stride 64: an 8 x 8 grid.
			if p1.Fragments != 64 || len(p1.Probs) != 6 || sum < 0.999 || sum > 1.001 || p1.Probs[p1.Class] != p1.Prob {
				t.Errorf("json prediction %+v (sum %v)", p1, sum)
			}
			if p2.Image != corrupt || p2.Error == "" {
				t.Errorf("json error line %+v", p2)
			}
			results[engine] = []prediction{p1}
		})
	}
	// Both engines give the same image-level probabilities.
	if a, b := results[engineORT], results[engineGo]; a != nil && b != nil {
		for class, p := range a[0].Probs {
			if math.Abs(float64(p-b[0].Probs[class])) > 1e-5 {
				t.Errorf("class %s: ONNX Runtime %v, Go engine %v", class, p, b[0].Probs[class])
			}
		}
	}
}

func TestOpenClassifierRejects(t *testing.T) {
	t.Parallel()
	model, _ := predictFixture(t)
	m, err := onnx.Decode(model)
	if err != nil {
		t.Fatal(err)
	}
	// A model without the texgrid spec metadata: renaming the key keeps the length, so
	// the protobuf stays valid.
	foreign := bytes.Replace(model, []byte(onnx.MetaSpec), []byte("texgrid.xxxx"), 1)
	if _, ok := m.Metadata[onnx.MetaSpec]; !ok {
		t.Fatal("fixture has no spec metadata")
	}
	cases := []struct {
		name   string
		model  []byte
		engine string
		want   string
		is     error
	}{
		{"unknown engine", model, "tensorflow", `unknown engine "tensorflow"`, nil},
		{"not onnx on the Go engine", []byte("not a model"), engineGo, "not an ONNX model", onnx.ErrNotONNX},
		{"foreign model on the Go engine", foreign, engineGo, "needs a model exported by texgrid", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := openClassifier(tc.model, tc.engine, 1, io.Discard)
			if err == nil {
				c.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestOpenClassifierAuto: auto picks ONNX Runtime when it loads and otherwise says why
// and serves with the Go engine (as in a CGO_ENABLED=0 build).
func TestOpenClassifierAuto(t *testing.T) {
	t.Parallel()
	model, _ := predictFixture(t)
	var notes bytes.Buffer
	c, err := openClassifier(model, engineAuto, 1, &notes)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ortErr := ort.Available(); ortErr == nil {
		if c.engine != engineORT || notes.Len() != 0 {
			t.Errorf("library loads, but auto chose %s; notes %q", c.engine, notes.String())
		}
	} else {
		if c.engine != engineGo || !strings.Contains(notes.String(), ortErr.Error()) || !strings.Contains(notes.String(), "using the Go engine") {
			t.Errorf("library missing: engine %s, notes %q", c.engine, notes.String())
		}
	}
}
