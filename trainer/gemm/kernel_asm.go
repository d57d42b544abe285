package gemm

import "github.com/texgrid/texgrid/trainer/gemm/internal/kern"

// avx512 is the implementation over the assembly of package kern.
var avx512 = &impl{name: "avx512", micro: kernAsm, transpose8: transpose8Asm}

// kernAsm is the microKernel over the assembly kernels. The caller guarantees that
// the slices cover what the tile reads and writes.
func kernAsm(nv, k int, a []float32, arow, astep int, b []float32, bstride int, c []float32, ldc, rows, cols int, flags uint32, beta float32, bias []float32) {
	mask := uint16(0xffff)
	if r := cols - 16*(nv-1); r < 16 {
		mask = uint16(1)<<r - 1
	}
	var bp *float32
	if flags&flagBias != 0 {
		bp = &bias[0]
	}
	ap, bb, cp := &a[0], &b[0], &c[0]
	pf := flags&flagPrefetchB != 0
	flags &^= flagPrefetchB
	switch {
	case nv == 3 && pf:
		kern.AVX512x8x48PFB(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	case nv == 3:
		kern.AVX512x8x48(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	case nv == 2 && pf:
		kern.AVX512x8x32PFB(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	case nv == 2:
		kern.AVX512x8x32(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	case pf:
		kern.AVX512x8x16PFB(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	default:
		kern.AVX512x8x16(k, ap, arow, astep, bb, bstride, cp, ldc, rows, mask, flags, beta, bp)
	}
}

// transpose8Asm is kern.Transpose8 with the bounds checks the assembly leaves out.
func transpose8Asm(dst []float32, ldd int, src []float32, lds, cols int) {
	if cols == 0 {
		return
	}
	_ = src[7*lds+cols-1]
	_ = dst[(cols-1)*ldd+7]
	kern.Transpose8(&src[0], lds, &dst[0], ldd, cols)
}
