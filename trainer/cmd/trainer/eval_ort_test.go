package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/safetensors"
)

// TestEvalORTMatchesGo evaluates the same weights on the same Kylberg test images with
// both engines: the reports agree.
func TestEvalORTMatchesGo(t *testing.T) {
	requireORTCmd(t)
	t.Parallel()
	ds := kylberg(t)
	dir := t.TempDir()
	_, m := exportFixture(t, dir, 6, 128)
	w := filepath.Join(dir, "meta.safetensors")
	meta := map[string]string{"model": "tcnn-small", "size": "128",
		"classes": `["canvas1","cushion1","linseeds1","sand1","seat2","stone1"]`}
	if err := safetensors.WriteFile(w, m.Params(), safetensors.F32, meta); err != nil {
		t.Fatal(err)
	}
	reports := map[string]*evalReport{}
	for _, engine := range []string{engineGo, engineORT} {
		out := filepath.Join(dir, engine+".json")
		if err := runEval(context.Background(), []string{"--data", ds, "--weights", w, "--engine", engine,
			"--eval-stride", "448", "--threads", "2", "--out", out}); err != nil {
			t.Fatalf("%s: %v", engine, err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var rep evalReport
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		reports[engine] = &rep
	}
	g, o := reports[engineGo], reports[engineORT]
	if o.Engine != engineORT || g.Engine != engineGo {
		t.Errorf("engines %q, %q", g.Engine, o.Engine)
	}
	// 576 px images, 128 px fragments, stride 448: 2 x 2 fragments per image.
	if g.Fragment.Samples != 4*int64(g.Images) || o.Fragment.Samples != g.Fragment.Samples {
		t.Fatalf("fragments: go %d, onnxruntime %d, images %d", g.Fragment.Samples, o.Fragment.Samples, g.Images)
	}
	if o.Fragment.Accuracy != g.Fragment.Accuracy || o.Image.Accuracy != g.Image.Accuracy || o.Image.MacroF1 != g.Image.MacroF1 {
		t.Errorf("accuracy: go fragment %v image %v, onnxruntime fragment %v image %v",
			g.Fragment.Accuracy, g.Image.Accuracy, o.Fragment.Accuracy, o.Image.Accuracy)
	}
	if rel := math.Abs(o.Loss-g.Loss) / g.Loss; rel > 1e-5 {
		t.Errorf("loss: go %v, onnxruntime %v (relative difference %.2g)", g.Loss, o.Loss, rel)
	}
	t.Logf("%d images, %d fragments: loss go %.6f onnxruntime %.6f", g.Images, g.Fragment.Samples, g.Loss, o.Loss)
}

func TestEvalORTListedAsEngine(t *testing.T) {
	t.Parallel()
	if _, ok := evalEngines[engineORT]; !ok || !strings.Contains(strings.Join(engineNames(), ","), engineORT) {
		t.Errorf("eval engines %v do not include %s", engineNames(), engineORT)
	}
}
