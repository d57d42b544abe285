package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/texgrid/texgrid/trainer/gemm"
)

func init() {
	commands["bench-sgemm"] = command{summary: "measure square sgemm GFLOP/s of the BLAS or the packed GEMM (one JSON line)", run: runBenchSGEMM}
}

// sgemmResult is the line `trainer bench-sgemm` prints: the best and the mean rate of
// c = a*b for n x n matrices over the measuring time.
type sgemmResult struct {
	Engine     string  `json:"engine"`    // "blas" (gemm.MatMul) or "packed" (gemm.MatMulAsm)
	BLAS       string  `json:"blas"`      // gemm.Backend()
	BLASCore   string  `json:"blas_core"` // the BLAS's kernels
	Kernel     string  `json:"kernel"`    // package gemm's micro-kernels
	N          int     `json:"n"`
	Threads    int     `json:"threads"`
	Calls      int     `json:"calls"`
	GFLOPs     float64 `json:"gflops"`      // best single call
	MeanGFLOPs float64 `json:"mean_gflops"` // all calls
}

func runBenchSGEMM(ctx context.Context, args []string) error {
	return benchSGEMM(ctx, args, os.Stdout)
}

// benchSGEMM is bench-sgemm writing its JSON line to w.
func benchSGEMM(ctx context.Context, args []string, w io.Writer) error {
	fs := flag.NewFlagSet("bench-sgemm", flag.ContinueOnError)
	engine := fs.String("engine", "blas", "blas (the BLAS, threaded by itself) or packed (the packed GEMM, columns split across threads)")
	n := fs.Int("n", 2048, "matrix side")
	threads := fs.Int("threads", runtime.NumCPU(), "threads")
	seconds := fs.Float64("seconds", 5, "measuring time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := gemm.EnvError(); err != nil {
		return err
	}
	if *engine != "blas" && *engine != "packed" {
		return fmt.Errorf("--engine %q is not blas or packed", *engine)
	}
	if *n < 1 || *threads < 1 || !(*seconds > 0) {
		return fmt.Errorf("--n %d, --threads %d and --seconds %g must be positive", *n, *threads, *seconds)
	}
	res, err := sgemmRate(ctx, *engine, *n, *threads, *seconds)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(res)
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// sgemmRate times c = a*b on random n x n matrices until seconds have passed (at
// least two calls, the first a warm-up that is not counted).
func sgemmRate(ctx context.Context, engine string, n, threads int, seconds float64) (*sgemmResult, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
	for i := range a {
		a[i], b[i] = rng.Float32()-0.5, rng.Float32()-0.5
	}
	call := func() {
		if engine == "blas" {
			gemm.MatMul(false, false, n, n, n, a, n, b, n, 0, c, n)
			return
		}
		// Column blocks of whole 48-column panels, one per thread.
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			j0 := t * n / threads / 48 * 48
			j1 := (t + 1) * n / threads / 48 * 48
			if t == threads-1 {
				j1 = n
			}
			if j1 <= j0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemm.MatMulAsm(false, false, n, j1-j0, n, a, n, b[j0:], n, 0, c[j0:], n)
			}()
		}
		wg.Wait()
	}
	if engine == "blas" {
		gemm.SetThreads(threads)
		defer gemm.SetThreads(1)
	}
	call()
	flop := 2 * float64(n) * float64(n) * float64(n)
	best, calls, start := 0.0, 0, time.Now()
	for calls < 1 || time.Since(start).Seconds() < seconds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		call()
		best = max(best, flop/time.Since(t0).Seconds()/1e9)
		calls++
	}
	mean := flop * float64(calls) / time.Since(start).Seconds() / 1e9
	return &sgemmResult{
		Engine: engine, BLAS: gemm.Backend(), BLASCore: gemm.BLASCore(), Kernel: gemm.Kernel(),
		N: n, Threads: threads, Calls: calls, GFLOPs: round(best, 3), MeanGFLOPs: round(mean, 3),
	}, nil
}
