//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package weights

import "unsafe"

// decodeF32 copies little-endian float32 bytes; on little-endian machines that is a
// plain memory copy.
func decodeF32(b []byte, dst []float32) {
	copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(dst)))
}

// asF32 views little-endian float32 bytes in place, without copying.
func asF32(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}
