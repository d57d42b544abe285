package safetensors

import (
	"testing"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// BenchmarkAddInto folds a tcnn3-sized delta (6 classes, 256 px: ~19.8 M parameters,
// ~79 MB of F32) into a running sum, next to its peer: the bare `sum[i] += delta[i]`
// loop over already-decoded float32 slices, the floor for any fold. MB/s is delta bytes.
func BenchmarkAddInto(b *testing.B) {
	r, err := mustSpec(b, "tcnn3").Resolve(6, 256)
	if err != nil {
		b.Fatal(err)
	}
	delta := randomTensors(r.Params, 3)
	file, err := Marshal(delta, F32, map[string]string{"kind": "delta"})
	if err != nil {
		b.Fatal(err)
	}
	sum := make([]tensor.Named, len(delta))
	for i, d := range delta {
		sum[i] = tensor.Named{Name: d.Name, T: tensor.New(d.T.Shape...)}
	}
	nbytes := int64(4 * r.NumParams())
	b.Run("safetensors", func(b *testing.B) {
		b.SetBytes(nbytes)
		for b.Loop() {
			if err := AddInto(sum, file, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("safetensors-finite-check", func(b *testing.B) {
		b.SetBytes(nbytes)
		for b.Loop() {
			if err := AddInto(sum, file, Options{RequireFinite: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bare-loop", func(b *testing.B) {
		b.SetBytes(nbytes)
		for b.Loop() {
			for i := range sum {
				s, d := sum[i].T.Data, delta[i].T.Data
				d = d[:len(s)]
				for k := range s {
					s[k] += d[k]
				}
			}
		}
	})
}

// BenchmarkDecode measures a full decode (allocating) of the same file, F32 and F16.
func BenchmarkDecode(b *testing.B) {
	r, err := mustSpec(b, "tcnn3").Resolve(6, 256)
	if err != nil {
		b.Fatal(err)
	}
	delta := randomTensors(r.Params, 3)
	for _, dt := range []DType{F32, F16} {
		file, err := Marshal(delta, dt, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(dt), func(b *testing.B) {
			b.SetBytes(int64(len(file)))
			for b.Loop() {
				if _, err := Decode(file, Options{Expect: r.Params}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
