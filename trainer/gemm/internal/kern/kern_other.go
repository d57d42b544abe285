//go:build !amd64 || purego

package kern

// Available and AvailableAVX2 are false: there are no assembly kernels in this build.
const (
	Available     = false
	AvailableAVX2 = false
)

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

// AVX2x4x8 is never called when AvailableAVX2 is false.
func AVX2x4x8(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x16 is never called when AvailableAVX2 is false.
func AVX2x4x16(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x24 is never called when AvailableAVX2 is false.
func AVX2x4x24(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// Transpose8AVX2 is never called when AvailableAVX2 is false.
func Transpose8AVX2(src *float32, lds int, dst *float32, ldd int, blocks int) {
	panic("kern: no assembly kernels in this build")
}

// AVX512x8x16PFB is never called when Available is false.
func AVX512x8x16PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX512x8x32PFB is never called when Available is false.
func AVX512x8x32PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX512x8x48PFB is never called when Available is false.
func AVX512x8x48PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x8PFB is never called when AvailableAVX2 is false.
func AVX2x4x8PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x16PFB is never called when AvailableAVX2 is false.
func AVX2x4x16PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x24PFB is never called when AvailableAVX2 is false.
func AVX2x4x24PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x8M is never called when AvailableAVX2 is false.
func AVX2x4x8M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x16M is never called when AvailableAVX2 is false.
func AVX2x4x16M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int) {
	panic("kern: no assembly kernels in this build")
}

// AVX2x4x24M is never called when AvailableAVX2 is false.
func AVX2x4x24M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int) {
	panic("kern: no assembly kernels in this build")
}
