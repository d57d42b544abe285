package eval

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
)

const tinySpec = `{"name":"tiny","input_channels":1,"layers":[
 {"type":"conv","name":"conv1","filters":4,"kernel":5,"stride":2},{"type":"relu"},{"type":"energy"},
 {"type":"dense","name":"fc1","units":"classes"}]}`

// job builds an evaluation job over 10 real Kylberg images per class (symlinked, never
// copied) and a freshly initialised tiny model.
func job(t *testing.T) *Job {
	src := shareddata.Path(t, "kylberg6")
	root := t.TempDir()
	m := &manifest.Manifest{Dataset: "kyl", TestFraction: 0.5, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"canvas1", "sand1"} {
		os.MkdirAll(filepath.Join(root, "kyl"), 0o755)
		if err := os.Symlink(filepath.Join(src, cls), filepath.Join(root, "kyl", cls)); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(src, cls, "*.png"))
		sort.Strings(names)
		for _, p := range names[:10] {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			w, h, _, err := data.DecodeConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			m.Images = append(m.Images, manifest.NewImage(cls, filepath.Base(p), b, w, h, 0.5))
		}
	}
	m.Finish()
	sp, err := spec.Parse([]byte(tinySpec))
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(2, 64)
	if err != nil {
		t.Fatal(err)
	}
	model, err := nn.New(r, 7)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "w.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := weights.Encode(f, model.Params(), weights.F32, nil); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return &Job{ModelPath: path, ModelSpec: sp.JSON(), Classes: m.Classes, FragmentSize: 64, Dataset: "kyl",
		Manifest: m, Images: datasets.Dir{Root: root}, Threads: 1}
}

// TestEnginesAgree: ONNX Runtime and the Go engine score the same model on the same
// test fragments alike (ONNX Runtime is skipped when its library is missing, unless
// TEXGRID_REQUIRE_ORT=1).
func TestEnginesAgree(t *testing.T) {
	j := job(t)
	g, err := Go{Stride: 64}.Evaluate(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	if g.Engine != "go" || g.Fragments == 0 || g.Images == 0 {
		t.Fatalf("Go engine: %+v", g)
	}
	if err := ort.Available(); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_ORT") == "1" {
			t.Fatalf("ONNX Runtime required: %v", err)
		}
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
	o, err := ORT{Stride: 64}.Evaluate(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	if o.Engine != "onnxruntime" || o.Fragments != g.Fragments || o.Images != g.Images {
		t.Fatalf("ORT covers %d fragments of %d images, Go %d of %d", o.Fragments, o.Images, g.Fragments, g.Images)
	}
	if math.Abs(o.Loss-g.Loss) > 1e-4*math.Max(1, g.Loss) {
		t.Fatalf("loss: ORT %v, Go %v", o.Loss, g.Loss)
	}
	// Argmax may flip only where two classes tie to float32 rounding.
	diff := 0
	for i := range g.Confusion {
		for k := range g.Confusion[i] {
			d := g.Confusion[i][k] - o.Confusion[i][k]
			if d > 0 {
				diff += d
			}
		}
	}
	if diff > g.Fragments/100 {
		t.Fatalf("%d of %d fragments classified differently: Go %v, ORT %v", diff, g.Fragments, g.Confusion, o.Confusion)
	}
	a, err := Auto{Go: Go{Stride: 64}, ORT: ORT{Stride: 64}}.Evaluate(context.Background(), j)
	if err != nil || a.Engine != "onnxruntime" {
		t.Fatalf("Auto with ONNX Runtime present: %+v, %v", a, err)
	}
}
