package gemm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// naive is the float64 reference product of row-major matrices.
func naive(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			out[i*n+j] = s
		}
	}
	return out
}

func TestMatMul(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name           string
		transA, transB bool
		m, n, k        int
		beta           float32
	}{
		{"nn", false, false, 7, 13, 5, 0},
		{"nt", false, true, 32, 121, 300, 0},
		{"tn", true, false, 121, 50, 32, 0},
		{"tt", true, true, 9, 11, 17, 0},
		{"accumulate", false, true, 16, 33, 40, 1},
		{"large", false, false, 64, 961, 800, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, 2))
			fill := func(n int) []float32 {
				s := make([]float32, n)
				for i := range s {
					s[i] = float32(rng.NormFloat64())
				}
				return s
			}
			a := fill(tc.m * tc.k)
			b := fill(tc.k * tc.n)
			c := fill(tc.m * tc.n)
			c0 := append([]float32(nil), c...)
			lda, ldb := tc.k, tc.n
			if tc.transA {
				lda = tc.m
			}
			if tc.transB {
				ldb = tc.k
			}
			MatMul(tc.transA, tc.transB, tc.m, tc.n, tc.k, a, lda, b, ldb, tc.beta, c, tc.n)
			want := naive(tc.transA, tc.transB, tc.m, tc.n, tc.k, a, lda, b, ldb)
			for i := range want {
				want[i] += float64(tc.beta) * float64(c0[i])
				if d := math.Abs(float64(c[i]) - want[i]); d > 1e-4*math.Sqrt(float64(tc.k))*(1+math.Abs(want[i])) {
					t.Fatalf("%s backend: element %d = %g, want %g", Backend(), i, c[i], want[i])
				}
			}
		})
	}
}

func TestBackend(t *testing.T) {
	t.Parallel()
	if b := Backend(); b != "openblas" && b != "gonum" {
		t.Fatalf("Backend() = %q", b)
	}
}

func BenchmarkMatMul(b *testing.B) {
	const n = 512
	x := make([]float32, n*n)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	c := make([]float32, n*n)
	b.SetBytes(0)
	for b.Loop() {
		MatMul(false, false, n, n, n, x, n, x, n, 0, c, n)
	}
	b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
