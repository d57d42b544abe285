package wu

import (
	"context"
	"fmt"
	"time"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Benchmark measures this machine's training speed in GFLOP/s: forward passes of
// tcnn-small over a batch of 128x128 fragments with the given threads, for about d
// (at least two passes). The server uses it to size work units and deadlines.
func Benchmark(ctx context.Context, threads int, d time.Duration) (float64, error) {
	b, err := configs.Model("tcnn-small")
	if err != nil {
		return 0, err
	}
	sp, err := spec.Parse(b)
	if err != nil {
		return 0, err
	}
	r, err := sp.Resolve(10, 128)
	if err != nil {
		return 0, err
	}
	m, err := nn.New(r, 1)
	if err != nil {
		return 0, err
	}
	const batch = 16
	x := tensor.New(batch, r.In[0].C, r.Size, r.Size)
	for i := range x.Data {
		x.Data[i] = float32(i%255)/255 - 0.5
	}
	if _, err := m.Infer(x, threads); err != nil { // warm-up: workspace allocation
		return 0, fmt.Errorf("benchmark: %w", err)
	}
	start := time.Now()
	passes := 0
	for passes < 2 || time.Since(start) < d {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if _, err := m.Infer(x, threads); err != nil {
			return 0, fmt.Errorf("benchmark: %w", err)
		}
		passes++
	}
	secs := time.Since(start).Seconds()
	return float64(r.FLOPs) * batch * float64(passes) / secs / 1e9, nil
}
