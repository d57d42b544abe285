package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// This file shows MulPackedFunc doing a convolution without an im2col matrix (an
// implicit im2col): the PackBFunc below writes blocks of the patch matrix straight from
// the input, which is first split into "phase planes" (the padded input split by row
// and column remainder modulo the stride), so that every run of outputs along a row
// reads a contiguous run of one plane whatever the stride.

// convGeom is one convolution of a c x h x w input with f filters of k x k.
type convGeom struct {
	c, h, w, f, k, s, pad int
	oh, ow, ph, pw        int
}

func newConvGeom(c, h, w, f, k, s, pad int) convGeom {
	g := convGeom{c: c, h: h, w: w, f: f, k: k, s: s, pad: pad}
	g.oh, g.ow = (h+2*pad-k)/s+1, (w+2*pad-k)/s+1
	g.ph, g.pw = (h+2*pad+s-1)/s, (w+2*pad+s-1)/s
	return g
}

// rows and cols are the shape of the patch matrix: c*k*k x oh*ow.
func (g convGeom) rows() int { return g.c * g.k * g.k }
func (g convGeom) cols() int { return g.oh * g.ow }

// phases writes plane (ci, a, b)[i][j] = xpad[ci][i*s+a][j*s+b] into planes.
func (g convGeom) phases(x, planes []float32) {
	clear(planes)
	for ci := 0; ci < g.c; ci++ {
		for iy := 0; iy < g.h; iy++ {
			py := iy + g.pad
			for ix := 0; ix < g.w; ix++ {
				px := ix + g.pad
				planes[((ci*g.s+py%g.s)*g.s+px%g.s)*g.ph*g.pw+(py/g.s)*g.pw+px/g.s] = x[(ci*g.h+iy)*g.w+ix]
			}
		}
	}
}

// packB returns the PackBFunc of the patch matrix over planes: element (p, j), with
// p = (ci*k+ki)*k+kj and j = oy*ow+ox, is plane (ci, ki%s, kj%s) at row oy+ki/s,
// column ox+kj/s, so a block row is a few contiguous copies, one per output row.
func (g convGeom) packB(planes []float32) PackBFunc {
	return func(dst []float32, k0, k1, j0, j1 int) {
		n := j1 - j0
		for p := k0; p < k1; p++ {
			ci, ki, kj := p/(g.k*g.k), p/g.k%g.k, p%g.k
			plane := planes[((ci*g.s+ki%g.s)*g.s+kj%g.s)*g.ph*g.pw:][:g.ph*g.pw]
			d := dst[(p-k0)*n : (p-k0+1)*n]
			oy, ox := j0/g.ow, j0%g.ow
			for o := 0; o < n; {
				run := min(g.ow-ox, n-o)
				at := (oy+ki/g.s)*g.pw + ox + kj/g.s
				copy(d[o:o+run], plane[at:at+run])
				o += run
				ox = 0
				oy++
			}
		}
	}
}

// naiveConv is the float64 reference: y = relu(w * x + bias), with the sum of the
// magnitudes of each output's terms for the error bound.
func naiveConv(g convGeom, w, bias, x []float32) (y, mag []float64) {
	y = make([]float64, g.f*g.cols())
	mag = make([]float64, len(y))
	for fi := 0; fi < g.f; fi++ {
		for oy := 0; oy < g.oh; oy++ {
			for ox := 0; ox < g.ow; ox++ {
				s, m := float64(bias[fi]), math.Abs(float64(bias[fi]))
				for ci := 0; ci < g.c; ci++ {
					for ki := 0; ki < g.k; ki++ {
						for kj := 0; kj < g.k; kj++ {
							iy, ix := oy*g.s+ki-g.pad, ox*g.s+kj-g.pad
							if iy < 0 || iy >= g.h || ix < 0 || ix >= g.w {
								continue
							}
							t := float64(w[((fi*g.c+ci)*g.k+ki)*g.k+kj]) * float64(x[(ci*g.h+iy)*g.w+ix])
							s += t
							m += math.Abs(t)
						}
					}
				}
				y[(fi*g.oh+oy)*g.ow+ox], mag[(fi*g.oh+oy)*g.ow+ox] = math.Max(0, s), m
			}
		}
	}
	return y, mag
}

func TestMulPackedFuncConv(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		g    convGeom
	}{
		{"stride 4 pad 2", newConvGeom(1, 40, 37, 8, 11, 4, 2)},
		{"stride 1 pad 2", newConvGeom(3, 13, 13, 10, 5, 1, 2)},
		{"stride 2 pad 1", newConvGeom(2, 9, 10, 9, 3, 2, 1)},
		{"tcnn-small conv2", newConvGeom(32, 31, 31, 64, 5, 1, 2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := tc.g
			rng := rand.New(rand.NewPCG(9, uint64(g.c*g.k)))
			rnd := func(n int) []float32 {
				s := make([]float32, n)
				for i := range s {
					s[i] = float32(rng.NormFloat64())
				}
				return s
			}
			w, bias, x := rnd(g.f*g.rows()), rnd(g.f), rnd(g.c*g.h*g.w)
			planes := make([]float32, g.c*g.s*g.s*g.ph*g.pw)
			g.phases(x, planes)
			pa := PackA(false, g.f, g.rows(), w, g.rows())
			y := make([]float32, g.f*g.cols())
			MulPackedFunc(pa, g.cols(), g.packB(planes), 0, y, g.cols(), Epilogue{Bias: bias, ReLU: true}, make([]float32, PackBSize(g.cols(), g.rows())))
			want, mag := naiveConv(g, w, bias, x)
			for i := range want {
				if d := math.Abs(float64(y[i]) - want[i]); !(d <= 4*float64(g.rows()+2)*mag[i]/(1<<24)) {
					t.Fatalf("output %d = %.9g, want %.9g", i, y[i], want[i])
				}
			}
		})
	}
}

// BenchmarkConvForward runs one sample's convolution + bias + ReLU three ways: an
// im2col matrix and the BLAS (bias written first, beta = 1, a ReLU pass after, as the
// engine did), the same matrix and MulPacked with the bias and ReLU fused, and
// MulPackedFunc packing straight from the phase planes. Each includes its im2col.
func BenchmarkConvForward(b *testing.B) {
	convs := []struct {
		name string
		g    convGeom
	}{
		{"tcnn-small-conv1", newConvGeom(1, 256, 256, 32, 11, 4, 2)},
		{"tcnn-small-conv2", newConvGeom(32, 31, 31, 64, 5, 1, 2)},
		{"tcnn-small-conv3", newConvGeom(64, 15, 15, 96, 3, 1, 1)},
		{"tcnn3-conv2", newConvGeom(96, 31, 31, 256, 5, 1, 2)},
		{"tcnn3-conv3", newConvGeom(256, 15, 15, 384, 3, 1, 1)},
	}
	for _, cv := range convs {
		g := cv.g
		kk, n := g.rows(), g.cols()
		w := make([]float32, g.f*kk)
		for i := range w {
			w[i] = float32(i%7) - 3
		}
		bias := make([]float32, g.f)
		x := make([]float32, g.c*g.h*g.w)
		for i := range x {
			x[i] = float32(i%5) - 2
		}
		planes := make([]float32, g.c*g.s*g.s*g.ph*g.pw)
		g.phases(x, planes)
		packB := g.packB(planes)
		cols := make([]float32, kk*n)
		y := make([]float32, g.f*n)
		flops := 2 * float64(g.f*kk*n)
		b.Run(fmt.Sprintf("%s/im2col+%s", cv.name, Backend()), func(b *testing.B) {
			runShape(b, flops, func() {
				packB(cols, 0, kk, 0, n)
				for i := 0; i < g.f; i++ {
					row := y[i*n : (i+1)*n]
					for j := range row {
						row[j] = bias[i]
					}
				}
				MatMul(false, false, g.f, n, kk, w, kk, cols, n, 1, y, n)
				for i, v := range y {
					y[i] = max(v, 0)
				}
			})
		})
		pa := PackA(false, g.f, kk, w, kk)
		ep := Epilogue{Bias: bias, ReLU: true}
		scratch := make([]float32, PackBSize(n, kk))
		b.Run(fmt.Sprintf("%s/im2col+%s-packed", cv.name, Kernel()), func(b *testing.B) {
			runShape(b, flops, func() {
				packB(cols, 0, kk, 0, n)
				MulPacked(pa, false, n, cols, n, 0, y, n, ep, scratch)
			})
		})
		b.Run(fmt.Sprintf("%s/implicit+%s-packed", cv.name, Kernel()), func(b *testing.B) {
			runShape(b, flops, func() { MulPackedFunc(pa, n, packB, 0, y, n, ep, scratch) })
		})
	}
}
