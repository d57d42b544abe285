//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package weights

import (
	"encoding/binary"
	"math"
)

func decodeF32(b []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

func asF32(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	decodeF32(b, out)
	return out
}
