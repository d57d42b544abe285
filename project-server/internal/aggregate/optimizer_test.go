package aggregate

import (
	"bytes"
	"math"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

// TestOptimizers steps each server optimiser twice from a zero state and compares with
// values worked out by hand.
func TestOptimizers(t *testing.T) {
	t.Parallel()
	f32 := func(x float64) float64 { return float64(float32(x)) }
	cases := []struct {
		name       string
		opt        Optimizer
		mean1      []float64
		mean2      []float64
		step1      []float64
		step2      []float64
		finalState [][]float64
	}{
		{
			name:  "sgd, lr 1 keeps the mean",
			opt:   SGD{LR: 1},
			mean1: []float64{1, -2}, mean2: []float64{0.5, 0.25},
			step1: []float64{1, -2}, step2: []float64{0.5, 0.25},
		},
		{
			name:  "sgd, lr 0.5",
			opt:   SGD{LR: 0.5},
			mean1: []float64{1, -2}, mean2: []float64{0.5, 0.25},
			step1: []float64{0.5, -1}, step2: []float64{0.25, 0.125},
		},
		{
			// m1 = mean1 = (1, -2); step1 = m1.
			// m2 = 0.9 m1 + mean2 = (0.9 + 0.5, -1.8 + 0.25) = (1.4, -1.55); step2 = m2.
			name:  "momentum 0.9, lr 1",
			opt:   Momentum{LR: 1, Beta: 0.9},
			mean1: []float64{1, -2}, mean2: []float64{0.5, 0.25},
			step1: []float64{1, -2}, step2: []float64{1.4, -1.55},
			finalState: [][]float64{{1.4, -1.55}},
		},
		{
			// m1 = 0.1 x 2 = 0.2, v1 = 0.01 x 4 = 0.04, step1 = 0.01 x 0.2 / (0.2 + 0.001).
			// m2 = 0.9 x 0.2 + 0.1 x 2 = 0.38 (from the stored float32 0.2),
			// v2 = 0.99 x 0.04 + 0.01 x 4 = 0.0796, step2 = 0.01 x 0.38 / (sqrt(0.0796) + 0.001).
			name:  "adam",
			opt:   Adam{LR: 0.01, Beta1: 0.9, Beta2: 0.99, Eps: 1e-3},
			mean1: []float64{2}, mean2: []float64{2},
			step1: []float64{0.01 * 0.2 / 0.201}, step2: []float64{0.01 * 0.38 / (math.Sqrt(0.0796) + 0.001)},
			finalState: [][]float64{{0.38}, {0.0796}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			state := make([][]float32, tc.opt.Moments())
			for k := range state {
				state[k] = make([]float32, len(tc.mean1))
			}
			for i, c := range []struct{ mean, want []float64 }{{tc.mean1, tc.step1}, {tc.mean2, tc.step2}} {
				got := append([]float64(nil), c.mean...)
				tc.opt.Step(got, state)
				for j := range got {
					if math.Abs(got[j]-c.want[j]) > 1e-6*math.Max(1, math.Abs(c.want[j])) {
						t.Fatalf("step %d value %d = %v, want %v", i+1, j, got[j], c.want[j])
					}
				}
			}
			for k, vec := range tc.finalState {
				for j, want := range vec {
					if math.Abs(float64(state[k][j])-f32(want)) > 1e-6 {
						t.Fatalf("state %d value %d = %v, want %v", k, j, state[k][j], want)
					}
				}
			}
		})
	}
}

func TestNewOptimizer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		want Optimizer
		err  bool
	}{
		{"", SGD{LR: 0.5}, false},
		{OptSGD, SGD{LR: 0.5}, false},
		{OptMomentum, Momentum{LR: 0.5, Beta: 0.9}, false},
		{OptAdam, Adam{LR: 0.5, Beta1: 0.9, Beta2: AdamBeta2, Eps: AdamEpsilon}, false},
		{"lion", nil, true},
	}
	for _, tc := range cases {
		got, err := NewOptimizer(tc.name, 0.5, 0.9)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("NewOptimizer(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	ps := []spec.Param{{Name: "a", Shape: []int{2, 2}}, {Name: "b", Shape: []int{3}}}
	st := NewState(ps, 2)
	for k := range st {
		for i := range st[k] {
			st[k][i] = float32(10*k + i)
		}
	}
	var buf bytes.Buffer
	if err := EncodeState(&buf, ps, st); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	got, err := DecodeState(bytes.NewReader(b), ps, 2)
	if err != nil {
		t.Fatal(err)
	}
	for k := range st {
		for i := range st[k] {
			if got[k][i] != st[k][i] {
				t.Fatalf("state %d value %d = %v, want %v", k, i, got[k][i], st[k][i])
			}
		}
	}
	cases := []struct {
		name string
		body []byte
		n    int
	}{
		{"fewer moments than stored", b, 1},
		{"truncated", b[:len(b)-4], 2},
		{"other model", func() []byte {
			var o bytes.Buffer
			if err := EncodeState(&o, ps[:1], NewState(ps[:1], 2)); err != nil {
				t.Fatal(err)
			}
			return o.Bytes()
		}(), 2},
	}
	for _, tc := range cases {
		if _, err := DecodeState(bytes.NewReader(tc.body), ps, tc.n); err == nil {
			t.Errorf("%s: DecodeState accepted it", tc.name)
		}
	}
}
