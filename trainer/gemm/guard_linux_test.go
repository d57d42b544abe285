//go:build linux

package gemm

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"unsafe"
)

// guarded returns a slice of n floats that ends exactly where an inaccessible page
// begins, so reading or writing one float past its end faults.
func guarded(t *testing.T, n int) []float32 {
	t.Helper()
	page := syscall.Getpagesize()
	size := (4*n+page-1)/page*page + page
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[size-page:], syscall.PROT_NONE); err != nil {
		t.Fatalf("mprotect: %v", err)
	}
	end := size - page
	return unsafe.Slice((*float32)(unsafe.Pointer(&mem[end-4*n])), n)
}

// TestEdgesStayInBounds puts A, B and C each right before an inaccessible page, with
// ragged right edges, and runs every kernel over them: the masked loads and stores
// of the last vectors, the in-place reads of A and the transposes must not touch a
// float past the end of any operand.
func TestEdgesStayInBounds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name           string
		transA, transB bool
		m, n, k        int
	}{
		{"nn", false, false, 13, 37, 19},
		{"nt", false, true, 9, 41, 35},
		{"tn", true, false, 17, 33, 20},
		{"tt", true, true, 11, 49, 18},
		{"one column", false, false, 16, 1, 5},
	}
	for _, im := range kernels() {
		for _, tc := range cases {
			for _, direct := range []bool{true, false} {
				rng := rand.New(rand.NewPCG(4, uint64(tc.m)))
				p := newProblem(rng, tc.transA, tc.transB, tc.m, tc.n, tc.k, 0, 0.5)
				a, b, c := guarded(t, len(p.a)), guarded(t, len(p.b)), guarded(t, len(p.c))
				copy(a, p.a)
				copy(b, p.b)
				copy(c, p.c)
				matMulKernel(im, defaultKC, direct, tc.transA, tc.transB, tc.m, tc.n, tc.k, a, p.lda, b, p.ldb, 0.5, c, p.ldc)
				t.Run(im.name+"/"+tc.name, func(t *testing.T) { p.check(t, c) })
			}
		}
	}
}
