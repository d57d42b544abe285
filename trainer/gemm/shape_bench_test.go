package gemm

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/texgrid/texgrid/trainer/gemm/internal/kern"
)

// benchShapes are the engine's products: tcnn-small conv1 (32 filters, k = 121, 63x63
// outputs) and conv2 (64 filters, k = 800, 31x31) with their weight-gradient (NT) and
// input-gradient (TN) forms, the same with the roles of the operands swapped, and
// tcnn3's conv2 (one 14-row chunk of outputs) and conv3 in all three forms.
var benchShapes = []struct {
	ta, tb  bool
	m, n, k int
}{
	{false, false, 32, 3969, 121},
	{false, false, 3969, 32, 121},
	{false, true, 3969, 32, 121},
	{false, false, 32, 4 * 3969, 121},
	{false, true, 32, 121, 3969},
	{true, false, 121, 32, 3969},
	{true, false, 121, 3969, 32},
	{false, false, 64, 961, 800},
	{false, false, 961, 64, 800},
	{false, true, 64, 800, 961},
	{true, false, 800, 961, 64},
	{false, false, 961, 800, 64},
	{false, false, 256, 434, 2400},
	{false, true, 256, 2400, 434},
	{true, false, 2400, 434, 256},
	{false, false, 384, 225, 2304},
	{false, true, 384, 2304, 225},
	{true, false, 2304, 225, 384},
}

// BenchmarkShapes runs every shape through the BLAS backend (MatMul) and the packed
// GEMM (MatMulAsm), one after the other (on an AVX-512 machine also with the AVX2
// kernels, which other CPUs get), and for the forward (NN) shapes also the way
// a convolution runs them: the BLAS with the bias written first, beta = 1 and a ReLU
// pass after, against MulPacked with A packed beforehand and the bias and ReLU fused.
// Besides the mean GFLOP/s it reports the fastest single call (best-GFLOP/s), which
// is the steadier figure on a machine shared with other work. Compare within a run.
func BenchmarkShapes(b *testing.B) {
	for _, s := range benchShapes {
		a := make([]float32, s.m*s.k)
		bb := make([]float32, s.k*s.n)
		c := make([]float32, s.m*s.n)
		for i := range a {
			a[i] = float32(i%7) - 3
		}
		for i := range bb {
			bb[i] = float32(i%5) - 2
		}
		lda, ldb := s.k, s.n
		if s.ta {
			lda = s.m
		}
		if s.tb {
			ldb = s.k
		}
		flops := 2 * float64(s.m*s.n*s.k)
		name := fmt.Sprintf("%v%v-%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k)
		b.Run(name+"/"+Backend(), func(b *testing.B) {
			runShape(b, flops, func() { MatMul(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n) })
		})
		b.Run(name+"/"+Kernel(), func(b *testing.B) {
			runShape(b, flops, func() { MatMulAsm(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n) })
		})
		if cur == avx512 && kern.AvailableAVX2 {
			b.Run(name+"/avx2", func(b *testing.B) {
				runShape(b, flops, func() {
					matMulKernel(avx2Impl, defaultKC, true, s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
				})
			})
		}
		if s.ta || s.tb {
			continue
		}
		bias := make([]float32, s.m)
		for i := range bias {
			bias[i] = float32(i%3) - 1
		}
		b.Run(name+"/"+Backend()+"-bias-relu", func(b *testing.B) {
			runShape(b, flops, func() {
				for i := 0; i < s.m; i++ {
					row := c[i*s.n : (i+1)*s.n]
					for j := range row {
						row[j] = bias[i]
					}
				}
				MatMul(false, false, s.m, s.n, s.k, a, lda, bb, ldb, 1, c, s.n)
				for i, v := range c {
					c[i] = max(v, 0)
				}
			})
		})
		b.Run(name+"/"+Kernel()+"-packed-bias-relu", func(b *testing.B) {
			pa := PackA(false, s.m, s.k, a, lda)
			ep := Epilogue{Bias: bias, ReLU: true}
			scratch := make([]float32, PackBSize(s.n, s.k))
			runShape(b, flops, func() { MulPacked(pa, false, s.n, bb, ldb, 0, c, s.n, ep, scratch) })
		})
	}
}

// runShape times f once per iteration and reports the mean and the best GFLOP/s.
func runShape(b *testing.B, flops float64, f func()) {
	best := time.Duration(math.MaxInt64)
	for b.Loop() {
		t0 := time.Now()
		f()
		best = min(best, time.Since(t0))
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(flops/best.Seconds()/1e9, "best-GFLOP/s")
}

// BenchmarkShapesRatio interleaves the BLAS backend and the packed GEMM call by call
// on every shape and reports the fastest call of each and their ratio (asm/blas).
// Interleaving exposes both to the same interference from other work, so the ratio is
// the figure to quote; run with a fixed count, e.g. -benchtime 100x.
func BenchmarkShapesRatio(b *testing.B) {
	for _, s := range benchShapes {
		a := make([]float32, s.m*s.k)
		bb := make([]float32, s.k*s.n)
		c := make([]float32, s.m*s.n)
		for i := range a {
			a[i] = float32(i%7) - 3
		}
		for i := range bb {
			bb[i] = float32(i%5) - 2
		}
		lda, ldb := s.k, s.n
		if s.ta {
			lda = s.m
		}
		if s.tb {
			ldb = s.k
		}
		flops := 2 * float64(s.m*s.n*s.k)
		b.Run(fmt.Sprintf("%v%v-%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k), func(b *testing.B) {
			blas, asm := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
			for b.Loop() {
				t0 := time.Now()
				MatMul(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
				t1 := time.Now()
				MatMulAsm(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
				blas, asm = min(blas, t1.Sub(t0)), min(asm, time.Since(t1))
			}
			b.ReportMetric(flops/blas.Seconds()/1e9, Backend()+"-best-GFLOP/s")
			b.ReportMetric(flops/asm.Seconds()/1e9, Kernel()+"-best-GFLOP/s")
			b.ReportMetric(blas.Seconds()/asm.Seconds(), "speedup")
		})
	}
}
