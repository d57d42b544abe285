//go:build amd64 && !purego

package kern

import "golang.org/x/sys/cpu"

//go:generate go run gen_kernels.go

// Available reports whether the CPU and the OS support the AVX-512 kernels, and
// AvailableAVX2 the AVX2 ones (AVX2 and FMA).
var (
	Available     = cpu.X86.HasAVX512F
	AvailableAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA
)

// AVX512x8x16 computes an 8 x 16 tile; see the package comment.
//
//go:noescape
func AVX512x8x16(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// AVX512x8x32 computes an 8 x 32 tile; see the package comment.
//
//go:noescape
func AVX512x8x32(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// AVX512x8x48 computes an 8 x 48 tile; see the package comment.
//
//go:noescape
func AVX512x8x48(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// Transpose8 writes the transpose of the 8 x cols block at src (rows lds floats
// apart) to dst: dst[q*ldd+r] = src[r*lds+q] for r < 8 and q < cols.
//
//go:noescape
func Transpose8(src *float32, lds int, dst *float32, ldd int, cols int)

// AVX512x8x16PFB is AVX512x8x16 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX512x8x16PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// AVX512x8x32PFB is AVX512x8x32 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX512x8x32PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// AVX512x8x48PFB is AVX512x8x48 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX512x8x48PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, mask uint16, flags uint32, beta float32, bias *float32)

// AVX2x4x8 computes a 4 x 8 tile with AVX2; see the package comment.
//
//go:noescape
func AVX2x4x8(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// AVX2x4x16 computes a 4 x 16 tile with AVX2; see the package comment.
//
//go:noescape
func AVX2x4x16(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// AVX2x4x24 computes a 4 x 24 tile with AVX2; see the package comment.
//
//go:noescape
func AVX2x4x24(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// Transpose8AVX2 is Transpose8 for AVX2 for cols = 8*blocks.
//
//go:noescape
func Transpose8AVX2(src *float32, lds int, dst *float32, ldd int, blocks int)

// AVX2x4x8PFB is AVX2x4x8 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX2x4x8PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// AVX2x4x16PFB is AVX2x4x16 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX2x4x16PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// AVX2x4x24PFB is AVX2x4x24 prefetching the row of B 8 steps ahead.
//
//go:noescape
func AVX2x4x24PFB(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32)

// AVX2x4x8M is AVX2x4x8 with only the first tail (1..8) columns of its last
// vector of B and C read and written, for a matrix's ragged right edge.
//
//go:noescape
func AVX2x4x8M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int)

// AVX2x4x16M is AVX2x4x16 with only the first tail (1..8) columns of its last
// vector of B and C read and written, for a matrix's ragged right edge.
//
//go:noescape
func AVX2x4x16M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int)

// AVX2x4x24M is AVX2x4x24 with only the first tail (1..8) columns of its last
// vector of B and C read and written, for a matrix's ragged right edge.
//
//go:noescape
func AVX2x4x24M(k int, a *float32, arow, astep int, b *float32, bstride int, c *float32, ldc, rows int, flags uint32, beta float32, bias *float32, tail int)
