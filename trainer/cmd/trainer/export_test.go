package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
)

// exportFixture writes random tcnn-small weights for classes at size px and returns the
// weights path and the Go model they came from.
func exportFixture(t *testing.T, dir string, classes, size int) (string, *nn.Model) {
	t.Helper()
	b, err := configs.Model("tcnn-small")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spec.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(classes, size)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.New(r, 5)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "w.safetensors")
	if err := safetensors.WriteFile(path, m.Params(), safetensors.F32, nil); err != nil {
		t.Fatal(err)
	}
	return path, m
}

// kylberg returns the shared Kylberg dataset folder, or skips (fails when required).
func kylberg(t *testing.T) string {
	t.Helper()
	return shareddata.Path(t, "kylberg6")
}

func TestExportCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	weights, _ := exportFixture(t, dir, 3, 64)
	out := filepath.Join(dir, "m.onnx")
	err := runExport(context.Background(), []string{"--model", "tcnn-small", "--weights", weights,
		"--classes", "bark, brick,sand", "--size", "64", "--meta", "texgrid.campaign=7", "-o", out})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := m.Classes()
	if err != nil || strings.Join(cs, ",") != "bark,brick,sand" {
		t.Errorf("classes %v, %v", cs, err)
	}
	if m.Metadata["texgrid.campaign"] != "7" || m.Metadata[onnx.MetaFragmentSize] != "64" {
		t.Errorf("metadata %v", m.Metadata)
	}
}

func TestExportClassesFromFolder(t *testing.T) {
	t.Parallel()
	ds := kylberg(t)
	dir := t.TempDir()
	weights, _ := exportFixture(t, dir, 6, 64)
	out := filepath.Join(dir, "m.onnx")
	if err := runExport(context.Background(), []string{"--model", "tcnn-small", "--weights", weights,
		"--classes-from", ds, "--size", "64", "-o", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := m.Classes()
	if got := strings.Join(cs, ","); got != "canvas1,cushion1,linseeds1,sand1,seat2,stone1" {
		t.Errorf("classes %s", got)
	}
}

func TestExportCommandRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	weights, m := exportFixture(t, dir, 3, 64)
	nan := filepath.Join(dir, "nan.safetensors")
	ps := m.Params()
	saved := ps[0].T.Data[0]
	ps[0].T.Data[0] = float32(math.NaN())
	if err := safetensors.WriteFile(nan, ps, safetensors.F32, nil); err != nil {
		t.Fatal(err)
	}
	ps[0].T.Data[0] = saved
	notWeights := filepath.Join(dir, "readme.safetensors")
	os.WriteFile(notWeights, []byte("hello"), 0o644)
	existing := filepath.Join(dir, "keep.onnx")
	os.WriteFile(existing, []byte("previous model"), 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no classes", []string{"--model", "tcnn-small", "--weights", weights, "--size", "64"}, "class names are required"},
		{"both class flags", []string{"--classes", "a,b,c", "--classes-from", dir}, "not both"},
		{"class count differs from the weights", []string{"--model", "tcnn-small", "--weights", weights, "--classes", "a,b", "--size", "64"}, "fc3.weight"},
		{"size differs from the weights", []string{"--model", "tcnn-small", "--weights", weights, "--classes", "a,b,c", "--size", "8"}, "too small"},
		{"wrong model", []string{"--model", "tcnn3", "--weights", weights, "--classes", "a,b,c", "--size", "64"}, "conv1.weight"},
		{"unknown model", []string{"--model", "tcnn9", "--weights", weights, "--classes", "a,b,c"}, "not shipped"},
		{"missing weights", []string{"--model", "tcnn-small", "--weights", filepath.Join(dir, "none"), "--classes", "a,b,c", "--size", "64"}, "no such file"},
		{"not a weights file", []string{"--model", "tcnn-small", "--weights", notWeights, "--classes", "a,b,c", "--size", "64"}, "safetensors"},
		{"non-finite weights", []string{"--model", "tcnn-small", "--weights", nan, "--classes", "a,b,c", "--size", "64"}, "non-finite"},
		{"repeated class", []string{"--model", "tcnn-small", "--weights", weights, "--classes", "a,b,a", "--size", "64"}, `"a" appears twice`},
		{"bad meta", []string{"--meta", "novalue"}, "want key=value"},
		{"reserved meta", []string{"--model", "tcnn-small", "--weights", weights, "--classes", "a,b,c", "--size", "64", "--meta", "texgrid.classes=x"}, "written by the exporter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append(append([]string{}, tc.args...), "-o", existing)
			if !contains(tc.args, "--weights") {
				args = append(args, "--weights", weights)
			}
			err := runExport(context.Background(), args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	// Nothing was written over the existing file by any failed export.
	if b, _ := os.ReadFile(existing); string(b) != "previous model" {
		t.Errorf("a failed export changed %s", existing)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestExportFromWeightsMetadata: weights written by `trainer train` carry model, spec,
// classes and size, so --weights and -o are enough.
func TestExportFromWeightsMetadata(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, m := exportFixture(t, dir, 3, 96)
	sp := m.Resolved().Spec
	cases := []struct {
		name string
		meta map[string]string
		args []string
		want string // error, or "" for success
	}{
		{"spec in metadata", map[string]string{"spec": string(sp.JSON()), "classes": `["a","b","c"]`, "size": "96"}, nil, ""},
		{"model name in metadata", map[string]string{"model": "tcnn-small", "classes": `["a","b","c"]`, "size": "96"}, nil, ""},
		{"flags override metadata", map[string]string{"model": "tcnn3", "classes": `["x"]`, "size": "300"},
			[]string{"--model", "tcnn-small", "--classes", "a,b,c", "--size", "96"}, ""},
		{"no model anywhere", map[string]string{"classes": `["a","b","c"]`, "size": "96"}, nil, "--model is required"},
		{"no classes anywhere", map[string]string{"model": "tcnn-small", "size": "96"}, nil, "class names are required"},
		{"bad classes metadata", map[string]string{"model": "tcnn-small", "classes": "a,b,c", "size": "96"}, nil, "metadata classes"},
		{"bad spec metadata", map[string]string{"spec": `{"name":"x"}`, "classes": `["a","b","c"]`}, nil, "metadata spec"},
		{"size metadata missing, 256 assumed", map[string]string{"model": "tcnn-small", "classes": `["a","b","c"]`}, nil, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := filepath.Join(dir, strconv.Itoa(i)+".safetensors")
			if err := safetensors.WriteFile(w, m.Params(), safetensors.F32, tc.meta); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, strconv.Itoa(i)+".onnx")
			err := runExport(context.Background(), append([]string{"--weights", w, "-o", out}, tc.args...))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want one mentioning %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			got, err := onnx.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			cs, _ := got.Classes()
			// The weights are 96 px weights, but conv weights do not depend on the size, so
			// an export at 256 px (no size metadata) is valid too.
			wantSize := "96"
			if tc.meta["size"] == "" {
				wantSize = "256"
			}
			if strings.Join(cs, ",") != "a,b,c" || got.Metadata[onnx.MetaFragmentSize] != wantSize || got.Metadata[onnx.MetaModel] != "tcnn-small" {
				t.Errorf("exported classes %v, metadata %v", cs, got.Metadata)
			}
		})
	}
}
