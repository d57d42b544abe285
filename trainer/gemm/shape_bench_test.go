package gemm

import (
	"fmt"
	"testing"
)

func BenchmarkShapes(b *testing.B) {
	shapes := []struct {
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
	}
	for _, s := range shapes {
		a := make([]float32, s.m*s.k)
		bb := make([]float32, s.k*s.n)
		c := make([]float32, s.m*s.n)
		lda, ldb := s.k, s.n
		if s.ta {
			lda = s.m
		}
		if s.tb {
			ldb = s.k
		}
		b.Run(fmt.Sprintf("%v%v-%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k), func(b *testing.B) {
			for b.Loop() {
				MatMul(s.ta, s.tb, s.m, s.n, s.k, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
