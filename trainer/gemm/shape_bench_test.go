package gemm

import (
	"fmt"
	"testing"
)

// benchShapes are the engine's products: tcnn-small conv1 (32 filters, k = 121, 63x63
// outputs) and conv2 (64 filters, k = 800, 31x31) with their weight-gradient (NT) and
// input-gradient (TN) forms, and tcnn3's conv2 (one 14-row chunk) and conv3.
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

// BenchmarkShapes runs every shape through the BLAS backend (MatMul), the packed GEMM
// (MatMulAsm) and, for the forward (NN) shapes, MulPacked with A packed beforehand and
// a bias + ReLU epilogue, as a convolution uses it. Compare GFLOP/s within one run.
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
			for b.Loop() {
				MatMul(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"/"+Kernel(), func(b *testing.B) {
			for b.Loop() {
				MatMulAsm(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		if s.ta || s.tb {
			continue
		}
		b.Run(name+"/"+Kernel()+"-packed-bias-relu", func(b *testing.B) {
			pa := PackA(false, s.m, s.k, a, lda)
			ep := Epilogue{Bias: make([]float32, s.m), ReLU: true}
			scratch := make([]float32, PackBSize(s.n, s.k))
			for b.Loop() {
				MulPacked(pa, false, s.n, bb, ldb, 0, c, s.n, ep, scratch)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
