package gemm

import "github.com/texgrid/texgrid/trainer/gemm/internal/kern"

// avx2Impl is the implementation for CPUs with AVX2 and FMA but not AVX-512.
var avx2Impl = &impl{name: "avx2", micro: kernAVX2, transpose8: transpose8AVX2}

// kernAVX2 is the microKernel over the AVX2 kernels: the tile is cut into 4-row
// halves and 24-, 16- or 8-column chunks, and the last cols%8 columns, which have no
// whole vector, go to the pure-Go kernel (they are at most 7 columns of a matrix's
// last panel).
func kernAVX2(nv, k int, a []float32, arow, astep int, b []float32, bstride int, c []float32, ldc, rows, cols int, flags uint32, beta float32, bias []float32) {
	full := cols &^ 7
	for h := 0; h < rows; h += 4 {
		ap, cr := &a[h*arow], c[h*ldc:]
		var bp *float32
		if flags&flagBias != 0 {
			bp = &bias[h]
		}
		rh := min(4, rows-h)
		for q := 0; q < full; q += 24 {
			switch min(24, full-q) {
			case 24:
				kern.AVX2x4x24(k, ap, arow, astep, &b[q], bstride, &cr[q], ldc, rh, flags, beta, bp)
			case 16:
				kern.AVX2x4x16(k, ap, arow, astep, &b[q], bstride, &cr[q], ldc, rh, flags, beta, bp)
			default:
				kern.AVX2x4x8(k, ap, arow, astep, &b[q], bstride, &cr[q], ldc, rh, flags, beta, bp)
			}
		}
	}
	if full < cols {
		kernGeneric(0, k, a, arow, astep, b[full:], bstride, c[full:], ldc, rows, cols-full, flags, beta, bias)
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
