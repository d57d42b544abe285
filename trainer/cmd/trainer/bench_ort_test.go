package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
)

// TestBenchORTOutput checks the JSON line bench.sh reads (its fields, not the speed).
func TestBenchORTOutput(t *testing.T) {
	requireORTCmd(t)
	t.Parallel()
	tiny := filepath.Join(t.TempDir(), "tiny.json")
	os.WriteFile(tiny, []byte(`{"name":"tiny","layers":[{"type":"conv","filters":4,"kernel":3},{"type":"relu"},
		{"type":"energy"},{"type":"dense","units":"classes"}]}`), 0o644)
	var out bytes.Buffer
	if err := benchORT(context.Background(), []string{"--onnx-from-spec", tiny, "--batch", "3", "--threads", "1",
		"--size", "16", "--classes", "2", "--seconds", "0.05"}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("want one line, got %q", out.String())
	}
	var res benchORTResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Engine != "onnxruntime" || res.Model != "tiny" || res.Batch != 3 || res.Threads != 1 || res.Size != 16 ||
		res.Classes != 2 || res.Batches < 1 || res.InferSamplesPerS <= 0 || res.ForwardGFLOPPerSample <= 0 || res.ORTVersion == "" {
		t.Errorf("result %+v", res)
	}
	// The same model from a file gives the same cost per sample (read from its spec metadata).
	sp, err := loadModelSpec(tiny)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(2, 16)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.New(r, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := onnx.Export(r, m.Params(), []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(t.TempDir(), "tiny.onnx")
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := benchORT(context.Background(), []string{"--onnx", model, "--batch", "2", "--threads", "1", "--seconds", "0.05"}, &out); err != nil {
		t.Fatal(err)
	}
	var res2 benchORTResult
	if err := json.Unmarshal(out.Bytes(), &res2); err != nil {
		t.Fatal(err)
	}
	if res2.ForwardGFLOPPerSample != res.ForwardGFLOPPerSample || res2.Size != 16 || res2.Model != "tiny" {
		t.Errorf("from file %+v, from spec %+v", res2, res)
	}
}

func TestBenchORTRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no model", nil, "exactly one of --onnx-from-spec"},
		{"both models", []string{"--onnx-from-spec", "tcnn-small", "--onnx", "m.onnx"}, "exactly one of"},
		{"zero batch", []string{"--onnx-from-spec", "tcnn-small", "--batch", "0"}, "--batch 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := benchORT(context.Background(), tc.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
