package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

// tinySpec is a small Texture-CNN that trains in a second on 32 px fragments.
const tinySpec = `{
  "name": "tiny", "input_channels": 1,
  "layers": [
    {"type": "conv", "filters": 6, "kernel": 5, "stride": 2, "pad": 2},
    {"type": "relu"},
    {"type": "maxpool", "kernel": 3, "stride": 2},
    {"type": "conv", "filters": 8, "kernel": 3, "pad": 1},
    {"type": "relu"},
    {"type": "energy"},
    {"type": "dense", "units": 16},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": "classes"}
  ]}`

// writeDataset makes <dir>/{noise,stripes}/*.png of 48x48 pixels, one image too small
// for 32 px fragments and one corrupt file, and returns dir and the spec path.
func writeDataset(t *testing.T) (dir, specPath string) {
	t.Helper()
	dir = t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, class := range []string{"noise", "stripes"} {
		if err := os.MkdirAll(filepath.Join(dir, class), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 14; i++ {
			side := 48
			if class == "noise" && i == 13 {
				side = 20 // too small
			}
			img := image.NewGray(image.Rect(0, 0, side, side))
			period := 3 + rng.Float64()*5
			for y := 0; y < side; y++ {
				for x := 0; x < side; x++ {
					v := rng.Float64()
					if class == "stripes" {
						v = 0.5 + 0.4*math.Sin(2*math.Pi*float64(x+y*(i%2))/period) + 0.05*rng.NormFloat64()
					}
					img.SetGray(x, y, color.Gray{Y: uint8(max(0, min(255, v*255)))})
				}
			}
			var b bytes.Buffer
			if err := png.Encode(&b, img); err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(dir, class, "img"+string(rune('a'+i))+".png")
			if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "stripes", "broken.png"), []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	specPath = filepath.Join(t.TempDir(), "tiny.json")
	if err := os.WriteFile(specPath, []byte(tinySpec), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, specPath
}

func trainArgs(data, specPath, out string) []string {
	return []string{"--data", data, "--model", specPath, "--size", "32", "--epochs", "8", "--batch", "8",
		"--fragments-per-epoch", "64", "--lr", "0.02", "--threads", "2", "--progress", "none", "--out", out,
		"--test-fraction", "0.3"}
}

func TestTrainAndEval(t *testing.T) {
	data, specPath := writeDataset(t)
	out := t.TempDir()
	args := func(out string) []string { return append(trainArgs(data, specPath, out), "--lr-decay", "0.9") }
	if err := runTrain(context.Background(), args(out)); err != nil {
		t.Fatal(err)
	}
	var res trainMetrics
	b, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Epochs) != 8 || res.Fragment == nil || res.Image == nil {
		t.Fatalf("metrics.json: %d epochs, fragment %v, image %v", len(res.Epochs), res.Fragment, res.Image)
	}
	if res.Image.Samples != int64(res.TestImages) || res.Fragment.Samples < res.Image.Samples {
		t.Errorf("image level has %d samples for %d test images, fragment level %d", res.Image.Samples, res.TestImages, res.Fragment.Samples)
	}
	for _, e := range res.Epochs {
		if want := 0.02 * math.Pow(0.9, float64(e.Epoch)); math.Abs(e.LR-want) > 1e-12 {
			t.Errorf("epoch %d trained at lr %g, want %g", e.Epoch, e.LR, want)
		}
	}
	if res.Epochs[7].Loss >= res.Epochs[0].Loss {
		t.Errorf("training loss went from %g to %g", res.Epochs[0].Loss, res.Epochs[7].Loss)
	}
	if res.Image.Accuracy < 0.8 {
		t.Errorf("image accuracy %g on stripes vs noise", res.Image.Accuracy)
	}
	t.Logf("loss %.3f -> %.3f, fragment accuracy %.3f, image accuracy %.3f", res.Epochs[0].Loss, res.Epochs[7].Loss, res.Fragment.Accuracy, res.Image.Accuracy)
	reasons := map[string]string{}
	for _, s := range res.Skipped {
		reasons[filepath.Base(s.Path)] = s.Reason
	}
	if !strings.Contains(reasons["imgn.png"], "smaller than") || reasons["broken.png"] == "" {
		t.Errorf("skipped %v; want imgn.png as too small and broken.png as unreadable", res.Skipped)
	}

	sp, _ := spec.Load(specPath)
	r, _ := sp.Resolve(2, 32)
	f, err := safetensors.ReadFile(filepath.Join(out, "weights.safetensors"), safetensors.Options{Expect: r.Params})
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta["model"] != "tiny" || f.Meta["size"] != "32" {
		t.Errorf("weights metadata %v", f.Meta)
	}

	evOut := filepath.Join(t.TempDir(), "eval.json")
	if err := runEval(context.Background(), []string{"--data", data, "--weights", filepath.Join(out, "weights.safetensors"),
		"--model", specPath, "--test-fraction", "0.3", "--threads", "1", "--out", evOut}); err != nil {
		t.Fatal(err)
	}
	var ev evalReport
	b, _ = os.ReadFile(evOut)
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Image.Accuracy != res.Image.Accuracy || ev.Fragment.Samples != res.Fragment.Samples ||
		math.Abs(ev.Fragment.Accuracy-res.Fragment.Accuracy) > 1e-9 {
		t.Errorf("eval gives image %g fragment %g over %d, train reported %g, %g over %d",
			ev.Image.Accuracy, ev.Fragment.Accuracy, ev.Fragment.Samples, res.Image.Accuracy, res.Fragment.Accuracy, res.Fragment.Samples)
	}

	// The same command again gives bit-identical weights.
	out2 := t.TempDir()
	if err := runTrain(context.Background(), args(out2)); err != nil {
		t.Fatal(err)
	}
	w1, _ := os.ReadFile(filepath.Join(out, "weights.safetensors"))
	w2, _ := os.ReadFile(filepath.Join(out2, "weights.safetensors"))
	if !bytes.Equal(w1, w2) {
		t.Error("two identical training runs wrote different weights")
	}

	t.Run("eval errors", func(t *testing.T) {
		weights := filepath.Join(out, "weights.safetensors")
		wrongSpec := filepath.Join(t.TempDir(), "wide.json")
		os.WriteFile(wrongSpec, []byte(strings.Replace(tinySpec, `"filters": 6`, `"filters": 7`, 1)), 0o644)
		oneClass := t.TempDir()
		os.MkdirAll(filepath.Join(oneClass, "noise"), 0o755)
		os.MkdirAll(filepath.Join(oneClass, "other"), 0o755)
		for _, c := range []string{"noise", "other"} {
			src, _ := os.ReadFile(filepath.Join(data, "noise", "imga.png"))
			os.WriteFile(filepath.Join(oneClass, c, "x.png"), src, 0o644)
		}
		cases := []struct {
			name string
			args []string
			want string
		}{
			{"no weights", []string{"--data", data}, "required"},
			{"unknown engine", []string{"--data", data, "--weights", weights, "--engine", "cuda"}, "--engine"},
			{"other architecture", []string{"--data", data, "--weights", weights, "--model", wrongSpec}, "shape"},
			{"other classes", []string{"--data", oneClass, "--weights", weights, "--model", specPath}, "classes"},
			{"missing weights file", []string{"--data", data, "--weights", filepath.Join(out, "nope")}, "no such file"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				err := runEval(context.Background(), tc.args)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.want)
				}
			})
		}
	})
}

func TestTrainBadInputs(t *testing.T) {
	t.Parallel()
	data, specPath := writeDataset(t)
	empty := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no data", []string{"--out", t.TempDir()}, "required"},
		{"no out", []string{"--data", data}, "required"},
		{"empty folder", []string{"--data", empty, "--out", t.TempDir(), "--model", specPath}, "no class"},
		{"fragments larger than every image", []string{"--data", data, "--out", t.TempDir(), "--model", specPath, "--size", "64"}, "need both"},
		{"batch 0", []string{"--data", data, "--out", t.TempDir(), "--model", specPath, "--size", "32", "--batch", "0"}, "batch size"},
		{"unknown model", []string{"--data", data, "--out", t.TempDir(), "--model", "resnet"}, "not shipped"},
		{"lr decay above 1", []string{"--data", data, "--out", t.TempDir(), "--model", specPath, "--size", "32", "--lr-decay", "1.2"}, "learning-rate decay"},
		{"bad progress", []string{"--data", data, "--out", t.TempDir(), "--progress", "fancy"}, "--progress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := runTrain(context.Background(), tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBenchmark(t *testing.T) {
	_, specPath := writeDataset(t)
	res, err := benchmark(context.Background(), specPath, 4, 2, 32, 3, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if res.TrainSamplesPerS <= 0 || res.InferSamplesPerS <= 0 || res.GFLOPs <= 0 || res.BLAS == "" || res.Model != "tiny" {
		t.Fatalf("benchmark result %+v", res)
	}
	// bench.sh prints which kernels each engine ran from these fields.
	if res.Kernel != gemm.Kernel() || res.Conv != nn.ConvEngine() || res.BLASCore != gemm.BLASCore() || res.BLASCore == "" {
		t.Errorf("benchmark names kernel %q, conv %q, blas core %q; want %q, %q, %q", res.Kernel, res.Conv, res.BLASCore, gemm.Kernel(), nn.ConvEngine(), gemm.BLASCore())
	}
	if _, err := benchmark(context.Background(), specPath, 0, 2, 32, 3, 0.2); err == nil {
		t.Error("batch 0 accepted")
	}
	if _, err := benchmark(context.Background(), specPath, 4, 2, 2, 3, 0.2); err == nil {
		t.Error("a fragment too small for the network accepted")
	}
}
