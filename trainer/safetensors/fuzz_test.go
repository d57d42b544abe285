package safetensors

import (
	"bytes"
	"math"
	"testing"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// FuzzDecode feeds arbitrary bytes to the decoder. It must never panic, must agree with
// ParseHeader, and whatever it accepts must survive a re-encode unchanged.
func FuzzDecode(f *testing.F) {
	seeds := [][]tensor.Named{
		{named("a", []int{2}, 1, 2), named("b", []int{}, -0.5)},
		{named("conv1.weight", []int{2, 1, 2, 2}, 1, 2, 3, 4, 5, 6, 7, 8), named("e", []int{0})},
		{},
	}
	for _, ts := range seeds {
		for _, dt := range []DType{F32, F16} {
			b, err := Marshal(ts, dt, map[string]string{"k": "v"})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add(raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f32le(1, 2)))
	f.Add(raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, f32le(1)))
	f.Add(raw(`{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}  `, []byte{0, 0x7c}))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		opt := Options{MaxBytes: 1 << 20}
		file, err := Decode(b, opt)
		_, herr := ParseHeader(b, opt)
		if (err == nil) != (herr == nil) {
			t.Fatalf("Decode error %v but ParseHeader error %v", err, herr)
		}
		if err != nil {
			return
		}
		// Folding the file into zeros of its own shapes reproduces the decoded values.
		dst := make([]tensor.Named, len(file.Tensors))
		for i, n := range file.Tensors {
			dst[i] = tensor.Named{Name: n.Name, T: tensor.New(n.T.Shape...)}
		}
		if err := AddInto(dst, b, opt); err != nil {
			t.Fatalf("Decode accepted but AddInto refused: %v", err)
		}
		for i := range dst {
			for k, v := range dst[i].T.Data {
				w := file.Tensors[i].T.Data[k]
				if v != w && !(math.IsNaN(float64(v)) && math.IsNaN(float64(w))) {
					t.Fatalf("AddInto %s[%d] = %v, Decode %v", dst[i].Name, k, v, w)
				}
			}
		}
		again, err := Marshal(file.Tensors, file.DType, file.Meta)
		if err != nil {
			// Only F16 range errors are possible, and a decoded F16 is always in range.
			t.Fatalf("re-encode: %v", err)
		}
		file2, err := Decode(again, opt)
		if err != nil {
			t.Fatalf("decode of re-encoded file: %v", err)
		}
		again2, _ := Marshal(file2.Tensors, file2.DType, file2.Meta)
		if !bytes.Equal(again, again2) {
			t.Fatal("encoding is not a fixed point")
		}
	})
}
