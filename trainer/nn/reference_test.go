package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// refForward is a direct float64 implementation of inference, written from the layer
// definitions without im2col, phase planes or fusion: the yardstick both BLAS backends
// are held to.
func refForward(m *Model, x []float32) []float64 {
	cur := make([]float64, len(x))
	for i, v := range x {
		cur[i] = float64(v)
	}
	for _, l := range m.layers {
		in, out := l.in, l.out
		next := make([]float64, out.Size())
		switch l.Type {
		case spec.Conv:
			w, b := m.params[l.w].T.Data, m.params[l.b].T.Data
			k := l.Kernel
			for f := 0; f < out.C; f++ {
				for oy := 0; oy < out.H; oy++ {
					for ox := 0; ox < out.W; ox++ {
						s := float64(b[f])
						for c := 0; c < in.C; c++ {
							for ki := 0; ki < k; ki++ {
								for kj := 0; kj < k; kj++ {
									iy, ix := oy*l.Stride-l.Pad+ki, ox*l.Stride-l.Pad+kj
									if iy < 0 || iy >= in.H || ix < 0 || ix >= in.W {
										continue
									}
									s += float64(w[((f*in.C+c)*k+ki)*k+kj]) * cur[(c*in.H+iy)*in.W+ix]
								}
							}
						}
						next[(f*out.H+oy)*out.W+ox] = s
					}
				}
			}
		case spec.ReLU:
			for i, v := range cur {
				next[i] = math.Max(0, v)
			}
		case spec.MaxPool:
			for c := 0; c < out.C; c++ {
				for oy := 0; oy < out.H; oy++ {
					for ox := 0; ox < out.W; ox++ {
						best := math.Inf(-1)
						for ki := 0; ki < l.Kernel; ki++ {
							for kj := 0; kj < l.Kernel; kj++ {
								best = math.Max(best, cur[(c*in.H+oy*l.Stride+ki)*in.W+ox*l.Stride+kj])
							}
						}
						next[(c*out.H+oy)*out.W+ox] = best
					}
				}
			}
		case spec.Energy:
			hw := in.H * in.W
			for c := 0; c < in.C; c++ {
				for j := 0; j < hw; j++ {
					next[c] += cur[c*hw+j] / float64(hw)
				}
			}
		case spec.Dense:
			w, b := m.params[l.w].T.Data, m.params[l.b].T.Data
			for o := 0; o < out.C; o++ {
				s := float64(b[o])
				for i := 0; i < in.C; i++ {
					s += float64(w[o*in.C+i]) * cur[i]
				}
				next[o] = s
			}
		case spec.Dropout:
			copy(next, cur)
		}
		cur = next
	}
	return cur
}

func TestForwardAgainstFloat64Reference(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		spec    string
		size    int
		threads int
	}{
		{"tcnn-small 67px", "", 67, 2},
		{"all layers 11px", testSpec, 11, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r *spec.Resolved
			if tc.spec == "" {
				var err error
				r, err = shippedSpec(t, "tcnn-small").Resolve(4, tc.size)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				r = resolve(t, tc.spec, 3, tc.size)
			}
			m, err := New(r, 21)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range m.Params() { // non-zero biases exercise the bias paths
				if len(p.T.Shape) == 1 {
					for j := range p.T.Data {
						p.T.Data[j] = 0.1 * float32(j%3-1)
					}
				}
			}
			const n = 3
			rng := rand.New(rand.NewPCG(4, 4))
			x := tensor.New(n, r.In[0].C, tc.size, tc.size)
			copy(x.Data, randSlice(rng, len(x.Data), 0.5))
			got := m.Forward(x, tc.threads)
			per := r.In[0].Size()
			for s := 0; s < n; s++ {
				want := refForward(m, x.Data[s*per:(s+1)*per])
				var scale float64
				for _, v := range want {
					scale = math.Max(scale, math.Abs(v))
				}
				for j, w := range want {
					g := float64(got.Data[s*r.Classes+j])
					if math.Abs(g-w) > 1e-4*(1+scale) {
						t.Errorf("%s backend: sample %d logit %d = %.7g, float64 reference %.7g", gemm.Backend(), s, j, g, w)
					}
				}
			}
		})
	}
}
