package eval

import (
	"context"
	"errors"
	"math"
	"os"
	"testing"

	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/ort"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

// TestClassify: one image's class probabilities sum to 1, the Go engine and ONNX
// Runtime agree on them, and an image smaller than a fragment is refused.
func TestClassify(t *testing.T) {
	j := job(t)
	ctx := context.Background()
	img, err := loadGray(ctx, j, j.Manifest.Images[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	m := Model{Spec: j.ModelSpec, Path: j.ModelPath, Classes: j.Classes, FragmentSize: j.FragmentSize}
	cases := []struct {
		name    string
		img     *data.Gray
		wantErr error
	}{
		{"whole image", img, nil},
		{"one fragment", &data.Gray{W: 64, H: 64, Pix: make([]uint8, 64*64)}, nil},
		{"too small", &data.Gray{W: 40, H: 80, Pix: make([]uint8, 40*80)}, ErrSmallImage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Classify(ctx, m, tc.img, 1)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var sum float64
			for _, p := range c.Probs {
				sum += p
			}
			if math.Abs(sum-1) > 1e-5 || len(c.Probs) != len(j.Classes) || c.Fragments == 0 {
				t.Fatalf("classification %+v: probabilities sum to %v", c, sum)
			}
			if want := "go"; ort.Available() == nil {
				if c.Engine != "onnxruntime" {
					t.Fatalf("engine %s with ONNX Runtime present", c.Engine)
				}
			} else if c.Engine != want {
				t.Fatalf("engine %s without ONNX Runtime", c.Engine)
			}
		})
	}
	if err := ort.Available(); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_ORT") == "1" {
			t.Fatalf("ONNX Runtime required: %v", err)
		}
		t.Skipf("ONNX Runtime unavailable: %v", err)
	}
	sp, _ := spec.Parse(j.ModelSpec)
	r, err := sp.Resolve(len(j.Classes), j.FragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(j.ModelPath, safetensors.Options{Expect: r.Params})
	if err != nil {
		t.Fatal(err)
	}
	frags := data.GridFragments(0, img.W, img.H, j.FragmentSize, j.FragmentSize/2)
	g, err := classifyGo(ctx, r, f.Tensors, j.Classes, img, frags, 1)
	if err != nil {
		t.Fatal(err)
	}
	o, err := classifyORT(ctx, r, f.Tensors, j.Classes, img, frags, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range g {
		if math.Abs(float64(g[i]-o[i])) > 1e-4 {
			t.Fatalf("fragment probability %d: Go %v, ONNX Runtime %v", i, g[i], o[i])
		}
	}
}
