package gemm

import (
	"fmt"
	"sync"
)

// The packed GEMM below is the trainer's own sgemm: A packed once into row panels
// (weights are packed once per batch and reused for every sample) or read in place,
// B read in place or packed one small panel at a time, and an assembly micro-kernel
// that keeps an 8 x 48 tile of C in registers and applies beta, bias and ReLU on the
// way out. It is single-threaded.
//
// Loop nest (after Goto and van de Geijn): for each block of kc steps of k, for each
// block of mc rows of A (sized for L2), for each panel of up to nr columns of B, for
// each panel of mr rows: one micro-kernel call.
//
// Determinism: every element of C is summed the same way whatever the blocking of
// rows and columns: in blocks of kc steps of k, each block summed in ascending k with
// one fused multiply-add per term into a fresh accumulator, which is then added to
// the running value (beta*C for the first block). So the result depends only on the
// inputs, k and the kernel: MulPacked, MulPackedFunc and MatMulAsm agree to the bit,
// as do repeated calls; a machine with other kernels (Kernel()) may differ in the
// last bits.

// defaultKC is the largest kc, the depth of a k block. It is fixed when A is packed;
// tests vary it through the unexported functions.
const defaultKC = 384

// blockDepth is kc for a depth of k: k cut into as few blocks of at most defaultKC
// as possible, of equal depth (the last one shorter by less than one per block), so
// that no block is left with a few steps that cost a whole pass over C.
func blockDepth(k int) int {
	if k <= defaultKC {
		return max(k, 1)
	}
	nb := (k + defaultKC - 1) / defaultKC
	return (k + nb - 1) / nb
}

// mcFloats is the floats of A per mc block: 512 KiB, half of L2, when B panels are
// packed, so that each is packed once for many rows; mcDirectFloats, 64 KiB, when B
// is read in place, which keeps the rows of A that a B panel meets close to L1
// (measured: 8% faster on tcnn3's input-gradient product, no loss elsewhere).
var (
	mcFloats       = 128 << 10
	mcDirectFloats = 16 << 10
)

// PackedA is a left operand packed for MulPacked: the m x k matrix op(A) cut into
// blocks of kc steps of k and, inside a block, panels of 8 rows stored k-major
// (panel element (p, r) at p*8+r), rows past m zero. It holds no reference to the
// matrix it was packed from.
type PackedA struct {
	m, k, kc int
	data     []float32
	// direct, when not nil, is A read in place by the micro-kernel (A^T when trans,
	// row stride lda); then data holds only the last panel when m%8 != 0, packed.
	direct []float32
	lda    int
	trans  bool
}

// panel returns the micro-panel of rows i0..i0+8 for the k block starting at k0 (kb
// steps deep, mp = m rounded up to 8) and the strides of its rows and k steps.
func (pa *PackedA) panel(k0, kb, mp, i0 int) (a []float32, arow, astep int) {
	switch {
	case pa.direct == nil:
		return pa.data[k0*mp+i0*kb:], 1, mr
	case i0+mr > pa.m:
		return pa.data[k0*mr:], 1, mr
	case pa.trans:
		return pa.direct[k0*pa.lda+i0:], 1, pa.lda
	default:
		return pa.direct[i0*pa.lda+k0:], pa.lda, 1
	}
}

// Rows returns m, the number of rows of the packed matrix (and of C).
func (pa *PackedA) Rows() int { return pa.m }

// Depth returns k, the number of columns of the packed matrix (rows of op(B)).
func (pa *PackedA) Depth() int { return pa.k }

// PackASize is the number of floats PackAInto needs for an m x k matrix.
func PackASize(m, k int) int { return roundUp(m, mr) * k }

// PackA packs the m x k matrix op(A) (a is k x m when transA) into new memory.
func PackA(transA bool, m, k int, a []float32, lda int) *PackedA {
	pa := PackAInto(make([]float32, PackASize(m, k)), transA, m, k, a, lda)
	return &pa
}

// PackAInto packs the m x k matrix op(A) into dst, which must hold PackASize(m, k)
// floats, and returns the PackedA over dst. Repacking the same weights each batch into
// the same dst allocates nothing.
func PackAInto(dst []float32, transA bool, m, k int, a []float32, lda int) PackedA {
	return packA(cur, dst, blockDepth(k), transA, m, k, a, lda)
}

func packA(im *impl, dst []float32, kc int, transA bool, m, k int, a []float32, lda int) PackedA {
	if m < 0 || k < 0 {
		panic(fmt.Sprintf("gemm: PackA of %d x %d", m, k))
	}
	if len(dst) < PackASize(m, k) {
		panic(fmt.Sprintf("gemm: PackA buffer holds %d floats, %d x %d needs %d", len(dst), m, k, PackASize(m, k)))
	}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	checkMatrix("a", a, rowsA, colsA, lda)
	mp := roundUp(m, mr)
	for k0 := 0; k0 < k; k0 += kc {
		kb := min(kc, k-k0)
		block := dst[k0*mp : k0*mp+kb*mp]
		for i0 := 0; i0 < m; i0 += mr {
			panel := block[i0*kb : (i0+mr)*kb]
			rows := min(mr, m-i0)
			switch {
			case transA && rows == mr:
				for p := 0; p < kb; p++ {
					o := (k0+p)*lda + i0
					*(*[mr]float32)(panel[p*mr:]) = [mr]float32(a[o : o+mr])
				}
			case transA:
				for p := 0; p < kb; p++ {
					d := panel[p*mr : p*mr+mr]
					src := a[(k0+p)*lda+i0 : (k0+p)*lda+i0+rows]
					for r := range d {
						d[r] = 0
						if r < len(src) {
							d[r] = src[r]
						}
					}
				}
			case rows == mr:
				im.transpose8(panel, mr, a[i0*lda+k0:], lda, kb)
			default:
				for r := 0; r < rows; r++ {
					src := a[(i0+r)*lda+k0 : (i0+r)*lda+k0+kb]
					for p, v := range src {
						panel[p*mr+r] = v
					}
				}
				for r := rows; r < mr; r++ {
					for p := 0; p < kb; p++ {
						panel[p*mr+r] = 0
					}
				}
			}
		}
	}
	return PackedA{m: m, k: k, kc: kc, data: dst[:mp*k]}
}

// Epilogue is what MulPacked applies to each element of C after the product and the
// beta term, in this order: Bias[i] is added to row i (nil adds nothing; otherwise it
// needs a value per row of C), then ReLU clamps at zero (a NaN stays NaN).
type Epilogue struct {
	Bias []float32
	ReLU bool
}

// PackBSize is the number of floats of scratch MulPacked and MulPackedFunc need for a
// product with n columns and depth k.
func PackBSize(n, k int) int { return min(k, defaultKC) * min(n, nr) }

// MulPacked computes c = pa * op(B) + beta*c followed by ep, where pa is m x k, op(B)
// is k x n (b is n x k when transB) and c is m x n; ldb and ldc are the row strides as
// stored. scratch must hold PackBSize(n, k) floats when transB (it is unused
// otherwise); a shorter one is replaced by an allocation. With beta 0, c is only
// written, so it may hold anything, NaN included. Calls may run concurrently on one
// PackedA as long as each has its own c and scratch; nothing is allocated.
func MulPacked(pa *PackedA, transB bool, n int, b []float32, ldb int, beta float32, c []float32, ldc int, ep Epilogue, scratch []float32) {
	src := bSource{b: b, ldb: ldb, trans: transB}
	if transB {
		checkMatrix("b", b, n, pa.k, ldb)
	} else {
		checkMatrix("b", b, pa.k, n, ldb)
	}
	mulPacked(cur, pa, n, src, beta, c, ldc, ep, scratch)
}

// PackBFunc writes the block of op(B) with rows k0 <= p < k1 and columns j0 <= j < j1
// into dst, densely and row-major: dst[(p-k0)*(j1-j0) + (j-j0)] = op(B)[p][j], with
// dst of exactly (k1-k0)*(j1-j0) floats. Blocks are at most 384 rows (the k blocks,
// which tile 0..k in equal depths) by at most 48 columns.
type PackBFunc func(dst []float32, k0, k1, j0, j1 int)

// MulPackedFunc is MulPacked with op(B) supplied block by block by packB instead of
// read from a matrix, so that B need never exist in full (an implicit im2col; see
// conv_example_test.go). Blocks are requested in order: k blocks ascending, inside
// each the column panels ascending, each once when m <= 336 (with more rows, again
// for each further block of at least 336 rows). scratch must hold
// PackBSize(n, pa.Depth()) floats. The result is bit-identical to MulPacked's on the
// same op(B).
func MulPackedFunc(pa *PackedA, n int, packB PackBFunc, beta float32, c []float32, ldc int, ep Epilogue, scratch []float32) {
	mulPacked(cur, pa, n, bSource{pack: packB}, beta, c, ldc, ep, scratch)
}

// bSource is the right operand of a product: a matrix read in place (not trans), a
// matrix packed panel by panel (trans), or a packing function.
type bSource struct {
	b     []float32
	ldb   int
	trans bool
	pack  PackBFunc
}

func mulPacked(im *impl, pa *PackedA, n int, src bSource, beta float32, c []float32, ldc int, ep Epilogue, scratch []float32) {
	m, k, kc := pa.m, pa.k, pa.kc
	if n < 0 {
		panic(fmt.Sprintf("gemm: MulPacked with n = %d", n))
	}
	if m == 0 || n == 0 {
		return
	}
	checkMatrix("c", c, m, n, ldc)
	if ep.Bias != nil && len(ep.Bias) < m {
		panic(fmt.Sprintf("gemm: bias has %d values for %d rows", len(ep.Bias), m))
	}
	if k == 0 {
		scaleEpilogue(m, n, beta, c, ldc, ep)
		return
	}
	needB := src.trans || src.pack != nil
	if needB && len(scratch) < PackBSize(n, k) {
		scratch = make([]float32, PackBSize(n, k))
	}
	mp := roundUp(m, mr)
	mc := max(mr, mcFloats/kc/mr*mr)
	if !needB {
		mc = max(mr, mcDirectFloats/kc/mr*mr)
	}
	for k0 := 0; k0 < k; k0 += kc {
		kb := min(kc, k-k0)
		flags, bt := flagLoadC, float32(1)
		if k0 == 0 {
			bt = beta
			if beta == 0 {
				flags = 0
			}
		}
		if k0+kb == k {
			if ep.Bias != nil {
				flags |= flagBias
			}
			if ep.ReLU {
				flags |= flagReLU
			}
		}
		for ic := 0; ic < m; ic += mc {
			ie := min(m, ic+mc)
			for j0, cols := 0, 0; j0 < n; j0 += cols {
				cols = panelWidth(n - j0)
				nv := (cols + 15) / 16
				var bp []float32
				bstride := cols
				switch {
				case src.pack != nil:
					bp = scratch[:kb*cols]
					src.pack(bp, k0, k0+kb, j0, j0+cols)
				case src.trans:
					bp = scratch[:kb*cols]
					packBT(im, bp, src.b, src.ldb, k0, kb, j0, cols)
				default:
					bp = src.b[k0*src.ldb+j0:]
					bstride = src.ldb
				}
				for i0 := ic; i0 < ie; i0 += mr {
					var bias []float32
					if flags&flagBias != 0 {
						bias = ep.Bias[i0:]
					}
					ap, arow, astep := pa.panel(k0, kb, mp, i0)
					f := flags
					if arow != 1 || astep == mr {
						// A comes from few cache lines (packed, or by rows), so
						// fetching B ahead pays; with A^T in place it did not.
						f |= flagPrefetchB
					}
					im.micro(nv, kb, ap, arow, astep, bp, bstride, c[i0*ldc+j0:], ldc, min(mr, m-i0), cols, f, bt, bias)
				}
			}
		}
	}
}

// panelWidth is the width of the next column panel when rem columns are left: nr,
// except that 32 + up to 32 columns beat 48 + up to 16, as the 16-wide kernel runs at
// two thirds of the others' speed.
func panelWidth(rem int) int {
	if rem > nr && rem <= nr+16 {
		return 32
	}
	return min(nr, rem)
}

// packBT writes columns j0..j0+cols of rows k0..k0+kb of op(B) = B^T (b is n x k,
// row stride ldb) into dst densely, kb rows of cols floats: groups of 8 columns
// through the transpose kernel, the rest element by element.
func packBT(im *impl, dst, b []float32, ldb, k0, kb, j0, cols int) {
	jj := 0
	for ; jj+8 <= cols; jj += 8 {
		im.transpose8(dst[jj:], cols, b[(j0+jj)*ldb+k0:], ldb, kb)
	}
	for ; jj < cols; jj++ {
		src := b[(j0+jj)*ldb+k0 : (j0+jj)*ldb+k0+kb]
		for p, v := range src {
			dst[p*cols+jj] = v
		}
	}
}

// scaleEpilogue is the whole product when k = 0: c = beta*c, then the epilogue.
func scaleEpilogue(m, n int, beta float32, c []float32, ldc int, ep Epilogue) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		for j, v := range row {
			if beta == 0 {
				v = 0
			} else {
				v *= beta
			}
			if ep.Bias != nil {
				v += ep.Bias[i]
			}
			if ep.ReLU && v < 0 {
				v = 0
			}
			row[j] = v
		}
	}
}

// MatMulAsm is MatMul (same arguments, same result up to rounding) computed by the
// packed GEMM of this package instead of the BLAS: A is packed for the call, so
// callers that reuse A should use PackA and MulPacked. It is safe for concurrent use.
func MatMulAsm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	matMulKernel(cur, blockDepth(k), true, transA, transB, m, n, k, a, lda, b, ldb, beta, c, ldc)
}

// scratchPool recycles MatMulAsm's packing buffers.
var scratchPool = sync.Pool{New: func() any { return new([]float32) }}

// matMulKernel is MatMulAsm with the kernels, the block depth and whether A is read
// in place (direct) or packed chosen by the caller.
func matMulKernel(im *impl, kc int, direct, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	// The kernel reads A in place, by rows or by columns, as fast as packed or
	// faster (measured on the engine's shapes), so MatMulAsm packs only a last
	// partial panel: the kernel reads 8 rows whatever m is.
	bufp := scratchPool.Get().(*[]float32)
	defer scratchPool.Put(bufp)
	sa, sb := PackASize(m, k), min(k, kc)*min(n, nr)
	if direct {
		sa = mr * k
	}
	if len(*bufp) < sa+sb {
		*bufp = make([]float32, sa+sb)
	}
	buf := *bufp
	var pa PackedA
	if direct {
		e := m / mr * mr
		pa = PackedA{m: m, k: k, kc: kc, direct: a, lda: lda, trans: transA}
		if transA {
			checkMatrix("a", a, k, m, lda)
			if e < m {
				pa.data = packA(im, buf[:sa], kc, true, m-e, k, a[e:], lda).data
			}
		} else {
			checkMatrix("a", a, m, k, lda)
			if e < m {
				pa.data = packA(im, buf[:sa], kc, false, m-e, k, a[e*lda:], lda).data
			}
		}
	} else {
		pa = packA(im, buf[:sa], kc, transA, m, k, a, lda)
	}
	if transB {
		checkMatrix("b", b, n, k, ldb)
	} else {
		checkMatrix("b", b, k, n, ldb)
	}
	mulPacked(im, &pa, n, bSource{b: b, ldb: ldb, trans: transB}, beta, c, ldc, Epilogue{}, buf[sa:])
}

// checkMatrix panics unless s can hold a rows x cols row-major matrix with row stride
// ld, the way the BLAS checks its arguments.
func checkMatrix(name string, s []float32, rows, cols, ld int) {
	if rows < 0 || cols < 0 {
		panic(fmt.Sprintf("gemm: %s is %d x %d", name, rows, cols))
	}
	if ld < max(1, cols) {
		panic(fmt.Sprintf("gemm: %s has stride %d for %d columns", name, ld, cols))
	}
	if rows > 0 && cols > 0 && len(s) < (rows-1)*ld+cols {
		panic(fmt.Sprintf("gemm: %s has %d floats, %d x %d with stride %d needs %d", name, len(s), rows, cols, ld, (rows-1)*ld+cols))
	}
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }
