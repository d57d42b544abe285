package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// problem is one product with its operands stored with the given strides.
type problem struct {
	transA, transB bool
	m, n, k        int
	lda, ldb, ldc  int
	beta           float32
	a, b, c        []float32
	bias           []float32
	relu           bool
}

// newProblem fills a problem with normal random values; pad adds to every stride.
func newProblem(rng *rand.Rand, transA, transB bool, m, n, k, pad int, beta float32) *problem {
	p := &problem{transA: transA, transB: transB, m: m, n: n, k: k, beta: beta}
	ra, ca := m, k
	if transA {
		ra, ca = k, m
	}
	rb, cb := k, n
	if transB {
		rb, cb = n, k
	}
	p.lda, p.ldb, p.ldc = max(1, ca)+pad, max(1, cb)+pad, max(1, n)+pad
	fill := func(rows, ld int) []float32 {
		s := make([]float32, max(0, (rows-1)*ld)+ld)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	p.a, p.b, p.c = fill(ra, p.lda), fill(rb, p.ldb), fill(m, p.ldc)
	return p
}

// check compares got (the product into a copy of p.c) with a float64 reference.
// The tolerance is the classical bound for a float32 dot product of length k, a few
// units of k*2^-24 times the sum of the magnitudes of the terms; elements outside the
// m x n window must be untouched.
func (p *problem) check(t *testing.T, got []float32) {
	t.Helper()
	const u = 1.0 / (1 << 24)
	for i := 0; i < p.m; i++ {
		for j := 0; j < p.n; j++ {
			var s, mag float64
			for q := 0; q < p.k; q++ {
				var av, bv float32
				if p.transA {
					av = p.a[q*p.lda+i]
				} else {
					av = p.a[i*p.lda+q]
				}
				if p.transB {
					bv = p.b[j*p.ldb+q]
				} else {
					bv = p.b[q*p.ldb+j]
				}
				s += float64(av) * float64(bv)
				mag += math.Abs(float64(av) * float64(bv))
			}
			if p.beta != 0 {
				s += float64(p.beta) * float64(p.c[i*p.ldc+j])
				mag += math.Abs(float64(p.beta) * float64(p.c[i*p.ldc+j]))
			}
			if p.bias != nil {
				s += float64(p.bias[i])
				mag += math.Abs(float64(p.bias[i]))
			}
			if p.relu {
				s = math.Max(0, s)
			}
			g := float64(got[i*p.ldc+j])
			if d := math.Abs(g - s); !(d <= 4*float64(p.k+3)*u*mag) {
				t.Fatalf("c[%d][%d] = %.9g, want %.9g (difference %.3g, magnitude %.3g)", i, j, g, s, d, mag)
			}
		}
		for j := p.n; j < p.ldc && i*p.ldc+j < len(got); j++ {
			if got[i*p.ldc+j] != p.c[i*p.ldc+j] {
				t.Fatalf("c[%d][%d] outside the %d columns changed from %g to %g", i, j, p.n, p.c[i*p.ldc+j], got[i*p.ldc+j])
			}
		}
	}
}

func TestMatMulAsm(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		m, n, k int
		pad     int
		beta    float32
	}{
		{"1x1x1", 1, 1, 1, 0, 0},
		{"13x37x5", 13, 37, 5, 0, 0},
		{"k=0 beta=0", 5, 7, 0, 0, 0},
		{"k=0 beta=0.5", 5, 7, 0, 0, 0.5},
		{"beta=1", 9, 50, 17, 0, 1},
		{"beta=0.5 padded", 17, 33, 40, 3, 0.5},
		{"one row", 1, 100, 30, 0, 0},
		{"one column", 30, 1, 30, 2, 1},
		{"full tiles", 16, 96, 64, 0, 0},
		{"edge 15 and 17 columns", 8, 15 + 48, 9, 0, 0.5},
		{"edge 33 columns", 11, 33, 9, 1, 0},
		{"deep", 10, 20, 700, 0, 1},
		{"deep padded", 23, 61, 300, 5, 0.5},
		{"many rows", 1100, 3, 6, 0, 0},
		{"conv-like", 32, 121, 121, 0, 1},
	}
	for _, kc := range []int{defaultKC, 7} {
		for _, kk := range kernels() {
			for _, tc := range cases {
				for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
					for _, direct := range []bool{true, false} {
						name := fmt.Sprintf("%s/kc=%d/direct=%v/%s/%v%v", kk.name, kc, direct, tc.name, tr[0], tr[1])
						t.Run(name, func(t *testing.T) {
							t.Parallel()
							rng := rand.New(rand.NewPCG(uint64(tc.m), uint64(tc.n*1000+tc.k)))
							p := newProblem(rng, tr[0], tr[1], tc.m, tc.n, tc.k, tc.pad, tc.beta)
							got := append([]float32(nil), p.c...)
							matMulKernel(kk, kc, direct, p.transA, p.transB, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, p.beta, got, p.ldc)
							p.check(t, got)
						})
					}
				}
			}
		}
	}
}

// TestMatMulAsmExported runs the exported entry point once per transpose pair, so
// the kernel chosen at start-up is the one tested.
func TestMatMulAsmExported(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
		p := newProblem(rng, tr[0], tr[1], 37, 101, 300, 1, 0.5)
		got := append([]float32(nil), p.c...)
		MatMulAsm(p.transA, p.transB, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, p.beta, got, p.ldc)
		p.check(t, got)
	}
}

// TestBetaZeroIgnoresC shows that with beta = 0 whatever c held, NaN included, does
// not reach the result.
func TestBetaZeroIgnoresC(t *testing.T) {
	t.Parallel()
	for _, kk := range kernels() {
		for _, k := range []int{0, 3, 300} {
			rng := rand.New(rand.NewPCG(1, uint64(k)))
			p := newProblem(rng, false, false, 9, 20, k, 0, 0)
			got := make([]float32, len(p.c))
			for i := range got {
				got[i] = float32(math.NaN())
				p.c[i] = 0
			}
			matMulKernel(kk, 128, true, false, false, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, 0, got, p.ldc)
			p.check(t, got)
		}
	}
}

func TestMulPackedEpilogue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		transB  bool
		m, n, k int
		beta    float32
		bias    bool
		relu    bool
	}{
		{"bias", false, 32, 100, 121, 0, true, false},
		{"relu", false, 13, 49, 30, 0, false, true},
		{"bias relu", false, 64, 961, 80, 0, true, true},
		{"bias relu beta=1", false, 9, 17, 300, 1, true, true},
		{"bias relu transB", true, 20, 50, 400, 0.5, true, true},
		{"k=0 bias relu", false, 5, 6, 0, 0.5, true, true},
	}
	for _, kk := range kernels() {
		for _, tc := range cases {
			t.Run(kk.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(3, uint64(tc.m)))
				p := newProblem(rng, false, tc.transB, tc.m, tc.n, tc.k, 1, tc.beta)
				var ep Epilogue
				if tc.bias {
					p.bias = make([]float32, tc.m)
					for i := range p.bias {
						p.bias[i] = float32(rng.NormFloat64())
					}
					ep.Bias = p.bias
				}
				p.relu, ep.ReLU = tc.relu, tc.relu
				pa := packA(kk, make([]float32, PackASize(p.m, p.k)), 100, false, p.m, p.k, p.a, p.lda)
				scratch := make([]float32, PackBSize(p.n, p.k))
				// The packed A serves two products, as weights serve every sample.
				for range 2 {
					got := append([]float32(nil), p.c...)
					mulPacked(kk, &pa, p.n, bSource{b: p.b, ldb: p.ldb, trans: p.transB}, p.beta, got, p.ldc, ep, scratch)
					p.check(t, got)
				}
			})
		}
	}
}

// TestMulPackedFunc packs B through a PackBFunc reading the same matrix and checks
// that the blocks requested tile op(B) and that the result is bit-identical to
// MulPacked's.
func TestMulPackedFunc(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 5))
	for _, tc := range []struct{ m, n, k int }{{8, 48, 256}, {33, 1000, 600}, {3, 5, 7}} {
		p := newProblem(rng, false, false, tc.m, tc.n, tc.k, 0, 0)
		pa := PackA(false, p.m, p.k, p.a, p.lda)
		seen := make([]int, p.k*p.n)
		packB := func(dst []float32, k0, k1, j0, j1 int) {
			if len(dst) != (k1-k0)*(j1-j0) {
				t.Fatalf("dst has %d floats for block [%d,%d) x [%d,%d)", len(dst), k0, k1, j0, j1)
			}
			for q := k0; q < k1; q++ {
				for j := j0; j < j1; j++ {
					dst[(q-k0)*(j1-j0)+j-j0] = p.b[q*p.ldb+j]
					seen[q*p.n+j]++
				}
			}
		}
		ep := Epilogue{Bias: p.a[:p.m], ReLU: true}
		got := make([]float32, len(p.c))
		MulPackedFunc(pa, p.n, packB, 0, got, p.ldc, ep, make([]float32, PackBSize(p.n, p.k)))
		for i, s := range seen {
			if mc := mcFloats / pa.kc / mr * mr; s != (p.m+mc-1)/mc {
				t.Fatalf("%dx%dx%d: element %d of B packed %d times", tc.m, tc.n, tc.k, i, s)
			}
		}
		want := make([]float32, len(p.c))
		MulPacked(pa, false, p.n, p.b, p.ldb, 0, want, p.ldc, ep, nil)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%dx%dx%d: element %d = %g through PackBFunc, %g through MulPacked", tc.m, tc.n, tc.k, i, got[i], want[i])
			}
		}
	}
}

// TestMatMulAsmRandom runs random shapes, strides, transposes and block depths
// through every kernel.
func TestMatMulAsmRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(11, 13))
	for i := range 200 {
		ta, tb := rng.IntN(2) == 1, rng.IntN(2) == 1
		m, n, k := 1+rng.IntN(70), 1+rng.IntN(150), rng.IntN(90)
		beta := []float32{0, 1, -0.75}[rng.IntN(3)]
		kc := 1 + rng.IntN(100)
		p := newProblem(rng, ta, tb, m, n, k, rng.IntN(4), beta)
		for _, kk := range kernels() {
			got := append([]float32(nil), p.c...)
			matMulKernel(kk, kc, rng.IntN(2) == 0, ta, tb, m, n, k, p.a, p.lda, p.b, p.ldb, beta, got, p.ldc)
			t.Run(fmt.Sprintf("%d-%s", i, kk.name), func(t *testing.T) { p.check(t, got) })
		}
	}
}

// TestDeterministic shows that repeating a product gives the same bits.
func TestDeterministic(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(2, 3))
	p := newProblem(rng, true, true, 70, 130, 600, 0, 0)
	first := make([]float32, len(p.c))
	MatMulAsm(true, true, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, 0, first, p.ldc)
	for range 3 {
		again := make([]float32, len(p.c))
		MatMulAsm(true, true, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, 0, again, p.ldc)
		for i := range first {
			if math.Float32bits(first[i]) != math.Float32bits(again[i]) {
				t.Fatalf("element %d: %g then %g", i, first[i], again[i])
			}
		}
	}
}

func TestBadArguments(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		call func()
	}{
		{"short a", func() {
			MatMulAsm(false, false, 4, 4, 4, make([]float32, 15), 4, make([]float32, 16), 4, 0, make([]float32, 16), 4)
		}},
		{"short b", func() {
			MatMulAsm(false, true, 4, 4, 4, make([]float32, 16), 4, make([]float32, 15), 4, 0, make([]float32, 16), 4)
		}},
		{"short c", func() {
			MatMulAsm(false, false, 4, 4, 4, make([]float32, 16), 4, make([]float32, 16), 4, 0, make([]float32, 15), 4)
		}},
		{"small lda", func() {
			MatMulAsm(false, false, 4, 4, 4, make([]float32, 16), 3, make([]float32, 16), 4, 0, make([]float32, 16), 4)
		}},
		{"small ldc", func() {
			MatMulAsm(false, false, 4, 4, 4, make([]float32, 16), 4, make([]float32, 16), 4, 0, make([]float32, 16), 3)
		}},
		{"short pack buffer", func() { PackAInto(make([]float32, 8*4-1), false, 4, 4, make([]float32, 16), 4) }},
		{"short bias", func() {
			pa := PackA(false, 4, 4, make([]float32, 16), 4)
			MulPacked(pa, false, 4, make([]float32, 16), 4, 0, make([]float32, 16), 4, Epilogue{Bias: make([]float32, 3)}, nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.call()
		})
	}
}

// TestTranspose8 checks each implementation's transpose against its definition,
// with strides wider than the block on both sides, and that the row after the last
// is not written.
func TestTranspose8(t *testing.T) {
	t.Parallel()
	for _, im := range kernels() {
		for _, cols := range []int{0, 1, 7, 15, 16, 17, 40, 48} {
			lds, ldd := cols+5, 11
			src := make([]float32, 8*lds)
			for i := range src {
				src[i] = float32(i)
			}
			dst := make([]float32, max(1, cols)*ldd+ldd)
			for i := range dst {
				dst[i] = -1
			}
			im.transpose8(dst, ldd, src, lds, cols)
			for q := 0; q <= cols; q++ {
				for r := 0; r < ldd; r++ {
					want := float32(-1)
					if r < 8 && q < cols {
						want = src[r*lds+q]
					}
					if dst[q*ldd+r] != want {
						t.Fatalf("%s, %d columns: dst[%d][%d] = %g, want %g", im.name, cols, q, r, dst[q*ldd+r], want)
					}
				}
			}
		}
	}
}

// TestMulPackedAllocates nothing once A is packed and the scratch is the caller's.
func TestMulPackedAllocatesNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	p := newProblem(rng, false, true, 40, 300, 500, 0, 0)
	pa := PackA(false, p.m, p.k, p.a, p.lda)
	scratch := make([]float32, PackBSize(p.n, p.k))
	ep := Epilogue{Bias: p.a[:p.m], ReLU: true}
	if n := testing.AllocsPerRun(5, func() {
		MulPacked(pa, true, p.n, p.b, p.ldb, 0, p.c, p.ldc, ep, scratch)
	}); n != 0 {
		t.Errorf("MulPacked allocates %v times per call", n)
	}
}

// TestPackedMatchesInPlace shows that a product gives the same bits whether A is
// packed (MulPacked) or read in place (MatMulAsm), for every kernel and layout.
func TestPackedMatchesInPlace(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(6, 6))
	for _, im := range kernels() {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			p := newProblem(rng, tr[0], tr[1], 29, 77, 600, 2, 0.5)
			inPlace := append([]float32(nil), p.c...)
			matMulKernel(im, defaultKC, true, p.transA, p.transB, p.m, p.n, p.k, p.a, p.lda, p.b, p.ldb, p.beta, inPlace, p.ldc)
			pa := packA(im, make([]float32, PackASize(p.m, p.k)), defaultKC, p.transA, p.m, p.k, p.a, p.lda)
			packed := append([]float32(nil), p.c...)
			mulPacked(im, &pa, p.n, bSource{b: p.b, ldb: p.ldb, trans: p.transB}, p.beta, packed, p.ldc, Epilogue{}, nil)
			for i := range packed {
				if math.Float32bits(packed[i]) != math.Float32bits(inPlace[i]) {
					t.Fatalf("%s %v: element %d = %g packed, %g in place", im.name, tr, i, packed[i], inPlace[i])
				}
			}
		}
	}
}

func TestBlockDepth(t *testing.T) {
	t.Parallel()
	for k := 1; k <= 3000; k++ {
		kc := blockDepth(k)
		nb := (k + kc - 1) / kc
		if kc > defaultKC || nb != (k+defaultKC-1)/defaultKC || nb*kc-k >= nb {
			t.Fatalf("k = %d: kc = %d in %d blocks", k, kc, nb)
		}
	}
}
