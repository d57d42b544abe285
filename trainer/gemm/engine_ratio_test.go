package gemm

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// BenchmarkEngineRatio interleaves the BLAS backend and the packed GEMM call by call on
// the NN and TN shapes the way the engine runs its convolutions on them: A (the
// weights, or their transpose) packed once beforehand, B read in place. It reports the
// fastest call of each and their ratio (packed/blas); run with a fixed count, e.g.
// -benchtime 30x, and with TEXGRID_GEMM_ISA=avx2 OPENBLAS_CORETYPE=Haswell for the
// AVX2 path.
func BenchmarkEngineRatio(b *testing.B) {
	for _, s := range benchShapes {
		if s.tb {
			continue
		}
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
		flops := 2 * float64(s.m*s.n*s.k)
		pa := PackA(s.ta, s.m, s.k, a, lda)
		b.Run(fmt.Sprintf("%v%v-%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k), func(b *testing.B) {
			blas, asm := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
			for b.Loop() {
				t0 := time.Now()
				MatMul(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
				t1 := time.Now()
				MulPacked(pa, false, s.n, bb, ldb, 0, c, s.n, Epilogue{}, nil)
				blas, asm = min(blas, t1.Sub(t0)), min(asm, time.Since(t1))
			}
			b.ReportMetric(flops/blas.Seconds()/1e9, Backend()+"-best-GFLOP/s")
			b.ReportMetric(flops/asm.Seconds()/1e9, Kernel()+"-best-GFLOP/s")
			b.ReportMetric(blas.Seconds()/asm.Seconds(), "speedup")
		})
	}
}
