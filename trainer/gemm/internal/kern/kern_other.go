//go:build !amd64 || purego

package kern

// Available is false: there are no assembly kernels for this build.
const Available = false

// AVX512x8x16 is never called when Available is false.
func AVX512x8x16(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX512x8x32 is never called when Available is false.
func AVX512x8x32(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX512x8x48 is never called when Available is false.
func AVX512x8x48(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// Transpose8 is never called when Available is false.
func Transpose8(src *float32, lds int, dst *float32, ldd int, cols int) {
	panic("kern: no assembly kernels in this build")
}
