package safetensors

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"

	"github.com/x448/float16"
)

// littleEndian is true on the machines texgrid runs on (amd64, arm64); there the F32
// data of a file is the in-memory representation and is copied or read in place.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// f32Bytes views a float32 slice as its bytes (no copy).
func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
}

// f32View views little-endian F32 bytes as float32s in place, or returns nil when that
// is not possible (big-endian machine, or b not 4-byte aligned, which Go's pointer rules
// forbid reinterpreting). Callers fall back to decoding word by word.
func f32View(b []byte) []float32 {
	if !littleEndian || len(b) < 4 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// putF32 writes src as little-endian F32 into dst (len(dst) == 4*len(src)).
func putF32(dst []byte, src []float32) {
	dst = dst[:4*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// getF32 decodes little-endian F32 bytes into dst (len(src) == 4*len(dst)).
func getF32(dst []float32, src []byte) {
	if littleEndian {
		copy(f32Bytes(dst), src)
		return
	}
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// putF16 rounds src to IEEE half precision (to nearest, ties to even) into dst.
func putF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(v).Bits())
	}
}

// f16Table maps every half-precision bit pattern to its exact float32 value; a table
// lookup is several times faster than converting bit fields per element.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = float16.Frombits(uint16(i)).Float32()
	}
	return &t
})

// getF16 widens little-endian F16 bytes into dst (len(src) == 2*len(dst)).
func getF16(dst []float32, src []byte) {
	t := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = t[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

// addF32 does dst[i] += alpha*x[i] for the little-endian F32 values x in src.
func addF32(dst []float32, src []byte, alpha float32) {
	src = src[:4*len(dst)]
	if x := f32View(src); x != nil {
		x = x[:len(dst)]
		if alpha == 1 {
			for i := range dst {
				dst[i] += x[i]
			}
			return
		}
		for i := range dst {
			// The explicit conversion forbids fusing into an FMA, so the sum is
			// bit-identical on every architecture.
			dst[i] += float32(alpha * x[i])
		}
		return
	}
	for i := range dst {
		dst[i] += float32(alpha * math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
	}
}

// addF16 does dst[i] += alpha*x[i] for the little-endian F16 values x in src.
func addF16(dst []float32, src []byte, alpha float32) {
	t := f16Table()
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] += float32(alpha * t[binary.LittleEndian.Uint16(src[2*i:])])
	}
}

// firstNonFinite returns the index of the first NaN or infinity in the encoded data, or
// -1. It looks only at exponent bits, a machine word at a time where the data is
// aligned, so it runs at memory speed.
func firstNonFinite(src []byte, dtype DType) int {
	start := 0
	switch dtype {
	case F32:
		if w := u64View(src); w != nil {
			// Two values per word: a lane whose exponent bits are all ones, i.e. whose
			// masked value XOR the mask is zero, is NaN or infinite.
			const m, ones, highs = 0x7f8000007f800000, 0x0000000100000001, 0x8000000080000000
			k := 0
			for ; k < len(w); k++ {
				v := w[k]&m ^ m
				if (v-ones)&^v&highs != 0 {
					break
				}
			}
			start = 8 * k
		}
		for i := start; i+4 <= len(src); i += 4 {
			if binary.LittleEndian.Uint32(src[i:])&0x7f800000 == 0x7f800000 {
				return i / 4
			}
		}
	case F16:
		if w := u64View(src); w != nil {
			const m, ones, highs = 0x7c007c007c007c00, 0x0001000100010001, 0x8000800080008000
			k := 0
			for ; k < len(w); k++ {
				v := w[k]&m ^ m
				if (v-ones)&^v&highs != 0 {
					break
				}
			}
			start = 8 * k
		}
		for i := start; i+2 <= len(src); i += 2 {
			if binary.LittleEndian.Uint16(src[i:])&0x7c00 == 0x7c00 {
				return i / 2
			}
		}
	}
	return -1
}

// u64View views the whole 8-byte words of b as little-endian uint64s in place, or
// returns nil (big-endian machine, unaligned or short b).
func u64View(b []byte) []uint64 {
	if !littleEndian || len(b) < 8 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}
