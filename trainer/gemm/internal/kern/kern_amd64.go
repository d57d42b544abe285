//go:build amd64 && !purego

package kern

import "golang.org/x/sys/cpu"

//go:generate go run gen_kernels.go

// Available reports whether the CPU and the OS support the kernels.
var Available = cpu.X86.HasAVX512F

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
