// Package gemm is the trainer's single entry point to matrix multiplication. MatMul
// goes through gonum's blas32, whose implementation is chosen at start-up: OpenBLAS
// through cgo when built with the `openblas` tag (see openblas.go), gonum's pure-Go
// sgemm otherwise. Callers that parallelise across samples keep each call
// single-threaded with SetThreads(1) so that the reduction order, and therefore every
// result bit, depends only on the inputs.
//
// The package also has its own single-threaded sgemm (packed.go), with assembly
// kernels for AVX-512 and AVX2 (Kernel says which one runs; $TEXGRID_GEMM_ISA caps the
// choice, so an AVX-512 machine can run and measure the AVX2 path): MatMulAsm has MatMul's
// contract; PackA + MulPacked reuse a packed left operand (the weights) across calls
// and fuse a bias and a ReLU into the product (Epilogue); MulPackedFunc takes the
// right operand from a packing function instead of a matrix. Where Kernel() is
// "generic" (no AVX2, or not amd64) these run in plain Go, far slower than MatMul.
package gemm

import (
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// MatMul computes c = op(a) * op(b) + beta*c for row-major matrices, where op(a) is
// m x k and op(b) is k x n; transA and transB select the transposes. lda, ldb and ldc
// are the row strides of a, b and c as stored.
func MatMul(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	blas32.Implementation().Sgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

// Backend names the BLAS in use: "openblas" or "gonum".
func Backend() string { return backend }

// SetThreads sets how many threads one MatMul call may use inside the BLAS. The engine
// calls it with 1 because it parallelises across samples itself. It has no effect on
// the pure-Go backend, which splits large products across goroutines on its own
// (block by block, so results do not depend on scheduling).
func SetThreads(n int) {
	if n < 1 {
		n = 1
	}
	if int(threads.Swap(int64(n))) != n {
		setThreads(n)
	}
}

// threads is the value last given to the BLAS, so repeated calls cost nothing.
var threads atomic.Int64
