package nn

import (
	"math/rand/v2"
	"testing"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/spec"
)

func convLayer(cin, size, f, k, s, p int) *layerInfo {
	oh := (size+2*p-k)/s + 1
	return &layerInfo{Layer: spec.Layer{Type: spec.Conv, Filters: f, Kernel: k, Stride: s, Pad: p},
		in: spec.Shape{C: cin, H: size, W: size}, out: spec.Shape{C: f, H: oh, W: oh}}
}

var benchConvs = []struct {
	name string
	l    *layerInfo
}{
	{"conv1", convLayer(1, 256, 32, 11, 4, 2)},
	{"conv2", convLayer(32, 31, 64, 5, 1, 2)},
	{"conv3", convLayer(64, 15, 96, 3, 1, 1)},
}

func BenchmarkKernels(b *testing.B) {
	for _, c := range benchConvs {
		l := c.l
		x := make([]float32, l.in.Size())
		cols := make([]float32, colsSize(l))
		planes := make([]float32, phaseSize(l))
		y := make([]float32, l.out.Size())
		w := make([]float32, l.Filters*l.in.C*l.Kernel*l.Kernel)
		f, k, p := l.Filters, l.in.C*l.Kernel*l.Kernel, chunkRows(l)*l.out.W
		b.Run(c.name+"/im2col", func(b *testing.B) {
			toPhases(l, x, planes)
			for b.Loop() {
				for oy0 := 0; oy0 < l.out.H; oy0 += chunkRows(l) {
					oy1 := min(l.out.H, oy0+chunkRows(l))
					im2colRows(l, planes, cols, oy0, oy1)
				}
			}
		})
		pw := newPackedWeights(l, true)
		pw.pack(l, w, true)
		for _, v := range []struct {
			name string
			pw   *packedWeights
		}{{"MatMul", nil}, {"MulPacked", pw}} {
			b.Run(c.name+"/conv-fwd-"+v.name, func(b *testing.B) {
				bias := make([]float32, l.Filters)
				for b.Loop() {
					convForward(l, v.pw, w, bias, x, y, cols, planes, false)
				}
			})
			b.Run(c.name+"/conv-bwd-"+v.name, func(b *testing.B) {
				gb := make([]float32, l.Filters)
				gw := make([]float32, len(w))
				dcols := make([]float32, len(cols))
				dplanes := make([]float32, len(planes))
				for b.Loop() {
					convBackward(l, v.pw, w, x, y, gw, gb, x, cols, dcols, planes, dplanes)
				}
			})
		}
		b.Run(c.name+"/gemm-fwd", func(b *testing.B) {
			for b.Loop() {
				gemm.MatMul(false, false, f, p, k, w, k, cols, p, 0, y, p)
			}
			b.ReportMetric(2*float64(f*p*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(c.name+"/gemm-dw", func(b *testing.B) {
			for b.Loop() {
				gemm.MatMul(false, true, f, k, p, y, p, cols, p, 1, w, k)
			}
			b.ReportMetric(2*float64(f*p*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(c.name+"/gemm-dx", func(b *testing.B) {
			for b.Loop() {
				gemm.MatMul(true, false, k, p, f, w, k, y, p, 0, cols, p)
			}
			b.ReportMetric(2*float64(f*p*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(c.name+"/relu", func(b *testing.B) {
			for b.Loop() {
				relu(y)
			}
		})
		pl := &layerInfo{Layer: spec.Layer{Type: spec.MaxPool, Kernel: 3, Stride: 2}, in: l.out,
			out: spec.Shape{C: l.out.C, H: (l.out.H-3)/2 + 1, W: (l.out.W-3)/2 + 1}}
		py := make([]float32, pl.out.Size())
		idx := make([]int32, pl.out.Size())
		rng := rand.New(rand.NewPCG(1, 1))
		for i := range y {
			y[i] = float32(rng.NormFloat64())
		}
		b.Run(c.name+"/maxpool-float", func(b *testing.B) {
			for b.Loop() {
				maxPoolForward(pl, y, py, nil, false)
			}
		})
		b.Run(c.name+"/maxpool", func(b *testing.B) {
			for b.Loop() {
				maxPoolForward(pl, y, py, idx, true)
			}
		})
	}
}
