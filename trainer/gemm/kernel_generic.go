package gemm

import "github.com/texgrid/texgrid/trainer/gemm/internal/kern"

// Tile geometry shared by every kernel: A is packed in panels of mr rows and the
// widest kernel covers nr columns (nr/16 vectors of 16 floats).
const (
	mr = 8
	nr = 48
)

// Flags of a micro-kernel call, shared with the assembly kernels.
const (
	flagLoadC = kern.FlagLoadC // add beta*C to the product
	flagBias  = kern.FlagBias  // add bias[row]
	flagReLU  = kern.FlagReLU  // clamp at zero after everything else

	// flagPrefetchB asks for the kernel variant that prefetches B ahead, where there
	// is one; it changes no result.
	flagPrefetchB uint32 = 1 << 8
)

// microKernel computes one C tile of rows x cols (rows <= mr, 16*(nv-1) < cols <= 16*nv)
// from an A micro-panel a (element (r, p) at r*arow+p*astep; all mr rows are read by
// the assembly, so they must exist) and B rows b (k rows, bstride floats apart, cols
// used), and applies flags. Only the rows x cols elements of c (ldc
// apart) are written; b is read only within cols of each row.
type microKernel func(nv, k int, a []float32, arow, astep int, b []float32, bstride int, c []float32, ldc, rows, cols int, flags uint32, beta float32, bias []float32)

// impl is a set of kernels: the micro-kernel and the transpose the packers use.
type impl struct {
	name  string
	micro microKernel
	// transpose8 writes dst[q*ldd+r] = src[r*lds+q] for r < 8, q < cols.
	transpose8 func(dst []float32, ldd int, src []float32, lds, cols int)
}

// generic is the pure-Go implementation; cur is the one in use, chosen at start-up.
var (
	generic = &impl{name: "generic", micro: kernGeneric, transpose8: transpose8Go}
	cur     = generic
)

// Kernel names the kernels behind MatMulAsm and MulPacked: "avx512", "avx2" or
// "generic" (pure Go, several times slower than the BLAS backends; prefer MatMul there).
func Kernel() string { return cur.name }

// kernGeneric is the pure-Go microKernel. Its sums run in the same order as the
// assembly kernels' (k ascending, one accumulator per element), but Go may or may not
// fuse the multiply-add, so its results can differ from theirs in the last bit.
func kernGeneric(nv, k int, a []float32, arow, astep int, b []float32, bstride int, c []float32, ldc, rows, cols int, flags uint32, beta float32, bias []float32) {
	var acc [mr * nr]float32
	for r := 0; r < rows; r++ {
		ar := acc[r*nr : r*nr+cols]
		for p := 0; p < k; p++ {
			av := a[r*arow+p*astep]
			bp := b[p*bstride : p*bstride+cols]
			ar := ar[:len(bp)]
			for j, bv := range bp {
				ar[j] += av * bv
			}
		}
	}
	for r := 0; r < rows; r++ {
		cr := c[r*ldc : r*ldc+cols]
		ar := acc[r*nr : r*nr+cols]
		for j := range cr {
			v := ar[j]
			if flags&flagLoadC != 0 {
				v += beta * cr[j]
			}
			if flags&flagBias != 0 {
				v += bias[r]
			}
			if flags&flagReLU != 0 && v < 0 {
				v = 0
			}
			cr[j] = v
		}
	}
}

func transpose8Go(dst []float32, ldd int, src []float32, lds, cols int) {
	for r := 0; r < 8; r++ {
		for q, v := range src[r*lds : r*lds+cols] {
			dst[q*ldd+r] = v
		}
	}
}
