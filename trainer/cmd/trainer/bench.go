package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/train"
)

func init() {
	commands["bench"] = command{summary: "measure training and inference speed on random data (one JSON line)", run: runBench}
}

// benchResult is the line `trainer bench` prints; trainer/bench/peer_torch.py prints
// the same fields so bench.sh can compare them.
type benchResult struct {
	Engine                string  `json:"engine"`
	BLAS                  string  `json:"blas"`
	BLASCore              string  `json:"blas_core"` // the BLAS's kernels (OpenBLAS core name, "go" for gonum)
	Kernel                string  `json:"kernel"`    // package gemm's micro-kernels (gemm.Kernel)
	Conv                  string  `json:"conv"`      // what the convolutions ran on (nn.ConvEngine)
	Model                 string  `json:"model"`
	Batch                 int     `json:"batch"`
	Threads               int     `json:"threads"`
	Size                  int     `json:"size"`
	Classes               int     `json:"classes"`
	TrainSamplesPerS      float64 `json:"train_samples_per_s"`
	InferSamplesPerS      float64 `json:"infer_samples_per_s"`
	GFLOPs                float64 `json:"gflops"`       // achieved in training, counting backward as twice forward
	InferGFLOPs           float64 `json:"infer_gflops"` // achieved in inference
	ForwardGFLOPPerSample float64 `json:"forward_gflop_per_sample"`
	PeakRSSMB             float64 `json:"peak_rss_mb"`
}

// randomSource serves fixed random fragments with random labels: the benchmark
// measures the engine, not image decoding.
type randomSource struct {
	x      []float32
	labels []int
	size   int
}

func (s *randomSource) Len() int { return len(s.labels) }

func (s *randomSource) Sample(i int, dst []float32) (int, error) {
	copy(dst, s.x[(i%4)*s.size:][:s.size])
	return s.labels[i], nil
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	model := fs.String("model", "tcnn-small", "model spec file or shipped name")
	batch := fs.Int("batch", 32, "batch size")
	threads := fs.Int("threads", runtime.NumCPU(), "worker threads")
	size := fs.Int("size", 256, "fragment side in pixels")
	classes := fs.Int("classes", 6, "number of classes")
	seconds := fs.Float64("seconds", 10, "measuring time, split between training and inference")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := gemm.EnvError(); err != nil {
		return err
	}
	res, err := benchmark(ctx, *model, *batch, *threads, *size, *classes, *seconds)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(res)
	fmt.Fprintln(os.Stdout, string(b))
	return nil
}

// benchmark trains on random data for half of seconds, then infers for the other half.
func benchmark(ctx context.Context, model string, batch, threads, size, classes int, seconds float64) (*benchResult, error) {
	if batch < 1 || threads < 1 || !(seconds > 0) {
		return nil, fmt.Errorf("bench: batch %d, threads %d and seconds %g must be positive", batch, threads, seconds)
	}
	sp, err := loadModelSpec(model)
	if err != nil {
		return nil, err
	}
	r, err := sp.Resolve(classes, size)
	if err != nil {
		return nil, err
	}
	m, err := nn.New(r, 1)
	if err != nil {
		return nil, err
	}
	per := r.In[0].Size()
	rng := rand.New(rand.NewPCG(1, 2))
	src := &randomSource{x: make([]float32, 4*per), size: per}
	for i := range src.x {
		src.x[i] = rng.Float32() - 0.5
	}
	for i := 0; i < max(1<<16/batch, 2)*batch; i++ {
		src.labels = append(src.labels, rng.IntN(classes))
	}
	cfg := train.Config{Epochs: 1000, BatchSize: batch, LR: 0.001, Momentum: 0.9, WeightDecay: 5e-4, Seed: 1, Threads: threads}
	run, err := train.NewRun(m, src, cfg)
	if err != nil {
		return nil, err
	}
	half := time.Duration(seconds / 2 * float64(time.Second))
	// One warm-up step allocates the training buffers and faults in the pages.
	if _, err := run.Step(ctx); err != nil {
		return nil, err
	}
	samples, start := 0, time.Now()
	for time.Since(start) < half || samples == 0 {
		info, err := run.Step(ctx)
		if err != nil {
			return nil, err
		}
		samples += info.Samples
	}
	trainRate := float64(samples) / time.Since(start).Seconds()

	ws, err := nn.NewWorkspace(m, batch, threads)
	if err != nil {
		return nil, err
	}
	in := ws.Input(batch)
	for k := 0; k < batch; k++ {
		src.Sample(k, in[k*per:(k+1)*per])
	}
	ws.Forward(batch, false, 0)
	samples, start = 0, time.Now()
	for time.Since(start) < half || samples == 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ws.Forward(batch, false, 0)
		samples += batch
	}
	inferRate := float64(samples) / time.Since(start).Seconds()

	gf := float64(r.FLOPs) / 1e9
	res := benchResult{
		Engine: "go", BLAS: gemm.Backend(), BLASCore: gemm.BLASCore(), Kernel: gemm.Kernel(), Conv: nn.ConvEngine(), Model: sp.Name, Batch: batch, Threads: threads, Size: size, Classes: classes,
		TrainSamplesPerS: round(trainRate, 1), InferSamplesPerS: round(inferRate, 1),
		GFLOPs: round(3*gf*trainRate, 1), InferGFLOPs: round(gf*inferRate, 1), ForwardGFLOPPerSample: round(gf, 4),
		PeakRSSMB: round(peakRSSMB(), 1),
	}
	return &res, nil
}

func round(x float64, digits int) float64 {
	p := 1.0
	for i := 0; i < digits; i++ {
		p *= 10
	}
	return float64(int64(x*p+0.5)) / p
}
