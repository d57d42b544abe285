package train

import (
	"context"
	"math"
	"testing"
)

// TestSGDFollowsPyTorch checks two steps against PyTorch's SGD update written out by
// hand: v = mu*v + (g + wd*w); w -= lr*v, with v starting at zero.
func TestSGDFollowsPyTorch(t *testing.T) {
	t.Parallel()
	src := &textures{n: 32, seed: 9, fail: -1}
	m := newModel(t, 4)
	cfg := Config{Epochs: 1, BatchSize: 16, LR: 0.05, Momentum: 0.8, WeightDecay: 0.01, Seed: 3, Threads: 2}
	r, err := NewRun(m, src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lr, mu, wd := float32(cfg.LR), float32(cfg.Momentum), float32(cfg.WeightDecay)
	w := weights(m)
	v := make([][]float32, len(w))
	for i := range w {
		v[i] = make([]float32, len(w[i]))
	}
	for step := 0; step < 2; step++ {
		if _, err := r.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
		grads := r.ws.Grads()
		got := weights(m)
		for i := range w {
			g := grads[i].T.Data
			for j := range w[i] {
				v[i][j] = mu*v[i][j] + (g[j] + wd*w[i][j])
				w[i][j] -= lr * v[i][j]
				if d := math.Abs(float64(got[i][j] - w[i][j])); d > 1e-6*(1+math.Abs(float64(w[i][j]))) {
					t.Fatalf("step %d, %s[%d]: %g, want %g", step, grads[i].Name, j, got[i][j], w[i][j])
				}
			}
		}
	}
}
