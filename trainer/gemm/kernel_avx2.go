package gemm

import "github.com/texgrid/texgrid/trainer/gemm/internal/kern"

// avx2Impl is the implementation for CPUs with AVX2 and FMA but not AVX-512.
var avx2Impl = &impl{name: "avx2", micro: kernAVX2, transpose8: transpose8AVX2}

// kernAVX2 is the microKernel over the AVX2 kernels: the tile is cut into chunks of
// up to 24 columns and each chunk into its two 4-row halves, chunk by chunk, so that
// the second half reads the chunk's rows of B from L1 right after the first. A chunk
// that ends in part of a vector (a matrix's ragged right edge) goes to the masked
// kernels, which neither read nor write past its last column.
func kernAVX2(nv, k int, a []float32, arow, astep int, b []float32, bstride int, c []float32, ldc, rows, cols int, flags uint32, beta float32, bias []float32) {
	pf := flags&flagPrefetchB != 0
	flags &^= flagPrefetchB
	for q := 0; q < cols; q += 24 {
		w := min(24, cols-q)
		tail := w - (w-1)/8*8 // columns in the chunk's last vector, 1..8
		for h := 0; h < rows; h += 4 {
			ap, bq, cp := &a[h*arow], &b[q], &c[h*ldc+q]
			var bp *float32
			if flags&flagBias != 0 {
				bp = &bias[h]
			}
			rh := min(4, rows-h)
			switch {
			case tail < 8 && w > 16:
				kern.AVX2x4x24M(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp, tail)
			case tail < 8 && w > 8:
				kern.AVX2x4x16M(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp, tail)
			case tail < 8:
				kern.AVX2x4x8M(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp, tail)
			case w == 24 && pf:
				kern.AVX2x4x24PFB(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			case w == 24:
				kern.AVX2x4x24(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			case w == 16 && pf:
				kern.AVX2x4x16PFB(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			case w == 16:
				kern.AVX2x4x16(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			case pf:
				kern.AVX2x4x8PFB(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			default:
				kern.AVX2x4x8(k, ap, arow, astep, bq, bstride, cp, ldc, rh, flags, beta, bp)
			}
		}
	}
}

// transpose8AVX2 is kern.Transpose8AVX2 over whole blocks of 8 columns, with the
// bounds checks the assembly leaves out, and the pure-Go transpose for the rest.
func transpose8AVX2(dst []float32, ldd int, src []float32, lds, cols int) {
	full := cols &^ 7
	if full > 0 {
		_ = src[7*lds+full-1]
		_ = dst[(full-1)*ldd+7]
		kern.Transpose8AVX2(&src[0], lds, &dst[0], ldd, full/8)
	}
	if full < cols {
		transpose8Go(dst[full*ldd:], ldd, src[full:], lds, cols-full)
	}
}
