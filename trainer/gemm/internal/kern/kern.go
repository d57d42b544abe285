// Package kern holds the assembly micro-kernels of package gemm's packed GEMM. They
// live apart because a package that uses cgo (gemm with the openblas tag) cannot
// contain Go assembly.
//
// Each kernel computes one 8 x (16*nv) tile of C for nv = 1, 2, 3:
// acc[r][j] = sum over p < k of a[r*arow+p*astep] * b[p*bstride+j], summed in
// ascending p with one fused multiply-add per term; then, as flags say,
// acc += beta*c (FlagLoadC), acc += bias[r] (FlagBias), acc = max(0, acc) (FlagReLU,
// NaN kept); and stores the first rows rows to c (ldc floats apart). The last
// 16-float vector of each row of b and c is loaded and stored under mask (one bit per
// column), so an unpadded ragged right edge is neither read nor written past its end.
// All 8 rows of A are read whatever rows is. arow, astep, bstride and ldc count
// floats; A may be packed (arow 1, astep 8) or read in place from either layout. The
// PFB variants also prefetch B 8 rows ahead, which pays when A streams from few lines
// (packed, or by rows) and costs when every k step of A is a new line (A^T in place).
//
// The AVX2 kernels, for CPUs without AVX-512, compute 4 x (8*nv) tiles the same way
// (4 rows of A read). Their plain and PFB variants are whole 8-float vectors wide; the
// M variants take the columns of their last vector (tail, 1..8) and load and store it
// with VMASKMOVPS, which neither reads nor writes the lanes past tail, so a ragged
// right edge runs in assembly too.
//
// Transpose8 is the packers' workhorse: an 8 x 16 block transposed in registers.
// Callers check bounds; the kernels trust their arguments.
package kern

// Flags of a kernel call.
const (
	FlagLoadC uint32 = 1
	FlagBias  uint32 = 2
	FlagReLU  uint32 = 4
)
