package ort

import (
	"testing"
)

// BenchmarkInfer measures ONNX Runtime and the Go engine on the same tcnn-small model,
// batch 32, 2 threads, 256 px fragments, in one run so their ratio is meaningful:
//
//	go test -tags openblas -run '^$' -bench Infer -benchtime 5s ./trainer/ort
func BenchmarkInfer(b *testing.B) {
	requireORT(b)
	const batch, threads = 32, 2
	r := shipped(b, "tcnn-small", 6, 256)
	m := newModel(b, r, 1)
	x := randomFragments(r, batch, 1)
	sess, err := Open(export(b, r, m), threads)
	if err != nil {
		b.Fatal(err)
	}
	defer sess.Close()
	engines := []struct {
		name string
		run  func() error
	}{
		{"onnxruntime", func() error { _, err := sess.Run(x); return err }},
		{"go", func() error { _, err := m.Infer(x, threads); return err }},
	}
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			if err := e.run(); err != nil { // warm-up
				b.Fatal(err)
			}
			for b.Loop() {
				if err := e.run(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
