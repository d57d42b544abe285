package gemm

import (
	"fmt"
	"testing"
)

// BenchmarkKernel measures one micro-kernel call on operands that stay in L1, the
// ceiling for the whole GEMM.
func BenchmarkKernel(b *testing.B) {
	for _, im := range kernels() {
		for _, nv := range []int{1, 2, 3} {
			for _, k := range []int{64, 128} {
				a := make([]float32, k*mr)
				bb := make([]float32, k*16*nv)
				c := make([]float32, mr*16*nv)
				b.Run(fmt.Sprintf("%s/8x%d/k=%d", im.name, 16*nv, k), func(b *testing.B) {
					for b.Loop() {
						im.micro(nv, k, a, 1, mr, bb, 16*nv, c, 16*nv, mr, 16*nv, flagLoadC, 1, nil)
					}
					b.ReportMetric(2*float64(k*mr*16*nv)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
