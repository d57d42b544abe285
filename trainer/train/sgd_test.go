package train

import (
	"context"
	"fmt"
	"math"
	"testing"
)

// TestSGDFollowsPyTorch checks four steps over two epochs against PyTorch's SGD update
// written out by hand: v = mu*v + (g + wd*w); w -= lr*v, with v starting at zero and
// lr = LR * LRDecay^epoch (ExponentialLR stepped per epoch).
func TestSGDFollowsPyTorch(t *testing.T) {
	t.Parallel()
	for _, decay := range []float64{0, 1, 0.5} {
		t.Run(fmt.Sprintf("decay %g", decay), func(t *testing.T) {
			t.Parallel()
			src := &textures{n: 32, seed: 9, fail: -1}
			m := newModel(t, 4)
			cfg := Config{Epochs: 2, BatchSize: 16, LR: 0.05, LRDecay: decay, Momentum: 0.8, WeightDecay: 0.01, Seed: 3, Threads: 2}
			r, err := NewRun(m, src, cfg)
			if err != nil {
				t.Fatal(err)
			}
			mu, wd := float32(cfg.Momentum), float32(cfg.WeightDecay)
			w := weights(m)
			v := make([][]float32, len(w))
			for i := range w {
				v[i] = make([]float32, len(w[i]))
			}
			for step := 0; step < 4; step++ {
				lr := float32(cfg.LR)
				if decay != 0 && step >= 2 { // the second epoch
					lr = float32(cfg.LR * decay)
				}
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
			if !r.Done() {
				t.Fatal("run not done after two epochs")
			}
		})
	}
}

func TestEpochLR(t *testing.T) {
	t.Parallel()
	cases := []struct {
		lr, decay float64
		epoch     int
		want      float64
	}{
		{0.01, 0, 5, 0.01},
		{0.01, 1, 5, 0.01},
		{0.01, 0.5, 0, 0.01},
		{0.01, 0.5, 1, 0.005},
		{0.01, 0.5, 3, 0.00125},
	}
	for _, c := range cases {
		got := Config{LR: c.lr, LRDecay: c.decay}.EpochLR(c.epoch)
		if math.Abs(got-c.want) > 1e-15 {
			t.Errorf("LR %g decay %g epoch %d: %g, want %g", c.lr, c.decay, c.epoch, got, c.want)
		}
	}
}
