package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/gemm"
)

// TestBenchSGEMMOutput checks the JSON line bench.sh reads for each engine: its fields
// and that it names the kernels that ran (not the speed).
func TestBenchSGEMMOutput(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"blas", "packed"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			if err := benchSGEMM(context.Background(), []string{"--engine", engine, "--n", "100", "--threads", "2", "--seconds", "0.02"}, &out); err != nil {
				t.Fatal(err)
			}
			if strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("want one line, got %q", out.String())
			}
			var res sgemmResult
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if res.Engine != engine || res.N != 100 || res.Threads != 2 || res.Calls < 1 || !(res.GFLOPs > 0) || !(res.MeanGFLOPs > 0) ||
				res.MeanGFLOPs > res.GFLOPs {
				t.Errorf("result %+v", res)
			}
			if res.BLAS != gemm.Backend() || res.BLASCore != gemm.BLASCore() || res.BLASCore == "" || res.Kernel != gemm.Kernel() {
				t.Errorf("result names blas %q core %q kernel %q, want %q %q %q", res.BLAS, res.BLASCore, res.Kernel, gemm.Backend(), gemm.BLASCore(), gemm.Kernel())
			}
		})
	}
}

// TestBenchSGEMMBadFlags shows that each kind of bad argument is refused with an
// error naming it, before anything is measured.
func TestBenchSGEMMBadFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown engine", []string{"--engine", "mkl"}, `"mkl"`},
		{"zero n", []string{"--n", "0"}, "--n 0"},
		{"negative threads", []string{"--threads", "-1"}, "--threads -1"},
		{"zero seconds", []string{"--seconds", "0"}, "--seconds 0"},
		{"not a number", []string{"--n", "big"}, "big"},
		{"stray argument", []string{"--bogus"}, "bogus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := benchSGEMM(context.Background(), tc.args, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q for bad arguments", out.String())
			}
		})
	}
}
