package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// kernels lists every micro-kernel this machine can run, so each test covers the
// assembly and the pure-Go fallback alike.
func kernels() []*impl { return availableKernels() }

// TestMicroKernel calls each micro-kernel directly on one tile for every width, a
// range of row counts and ragged column counts, and every combination of flags, and
// checks the tile against a float64 reference and the bytes around it for writes.
func TestMicroKernel(t *testing.T) {
	t.Parallel()
	for _, im := range kernels() {
		for _, cols := range []int{1, 5, 15, 16, 17, 31, 32, 33, 40, 47, 48} {
			for _, rows := range []int{1, 3, 7, 8} {
				for _, flags := range []uint32{0, 1, 2, 3, 4, 5, 6, 7, 7 | flagPrefetchB, flagPrefetchB} {
					name := fmt.Sprintf("%s/%dx%d/flags=%d", im.name, rows, cols, flags)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						checkTile(t, im, rows, cols, 37, flags)
					})
				}
			}
		}
	}
}

func checkTile(t *testing.T, im *impl, rows, cols, k int, flags uint32) {
	const arow, astep, bstride, ldc = 3, 29, 53, 50
	rng := rand.New(rand.NewPCG(uint64(rows), uint64(cols*8)+uint64(flags)))
	rnd := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	// Rows of the A panel past rows are padding; fill them anyway to show they do
	// not leak into the stored rows.
	a, b, bias := rnd(7*arow+(k-1)*astep+1), rnd((k-1)*bstride+cols), rnd(mr)
	c0 := rnd(mr * ldc)
	c := append([]float32(nil), c0...)
	beta := float32(0.5)
	nv := (cols + 15) / 16
	im.micro(nv, k, a, arow, astep, b, bstride, c, ldc, rows, cols, flags, beta, bias)
	for r := 0; r < mr; r++ {
		for j := 0; j < ldc; j++ {
			got := c[r*ldc+j]
			if r >= rows || j >= cols {
				if got != c0[r*ldc+j] {
					t.Fatalf("c[%d][%d] outside the tile changed", r, j)
				}
				continue
			}
			var s, mag float64
			for p := 0; p < k; p++ {
				s += float64(a[r*arow+p*astep]) * float64(b[p*bstride+j])
				mag += math.Abs(float64(a[r*arow+p*astep]) * float64(b[p*bstride+j]))
			}
			if flags&flagLoadC != 0 {
				s += float64(beta) * float64(c0[r*ldc+j])
				mag += math.Abs(float64(beta) * float64(c0[r*ldc+j]))
			}
			if flags&flagBias != 0 {
				s += float64(bias[r])
				mag += math.Abs(float64(bias[r]))
			}
			if flags&flagReLU != 0 {
				s = math.Max(0, s)
			}
			if d := math.Abs(float64(got) - s); !(d <= 4*float64(k+3)*mag/(1<<24)) {
				t.Fatalf("c[%d][%d] = %.9g, want %.9g", r, j, got, s)
			}
		}
	}
}

// TestReLUKeepsNaN shows that the ReLU epilogue passes a NaN on rather than hiding it
// as zero, in every implementation.
func TestReLUKeepsNaN(t *testing.T) {
	t.Parallel()
	for _, im := range kernels() {
		a := make([]float32, mr)
		b := []float32{float32(math.NaN()), -1, 1}
		a[0] = 1
		c := make([]float32, 3)
		im.micro(1, 1, a, 1, mr, b, 3, c, 3, 1, 3, flagReLU, 0, nil)
		if !math.IsNaN(float64(c[0])) || c[1] != 0 || c[2] != 1 {
			t.Errorf("%s: relu of [NaN -1 1] = %v", im.name, c)
		}
	}
}

// TestChooseKernel shows what each value of $TEXGRID_GEMM_ISA selects: never more
// than the CPU has, and an error naming a value it does not know.
func TestChooseKernel(t *testing.T) {
	t.Parallel()
	avail := availableKernels()
	best := avail[len(avail)-1]
	upTo := func(name string) *impl {
		choice := generic
		for _, im := range avail {
			if im.name == name {
				choice = im
			}
		}
		if name == "avx512" {
			return best
		}
		return choice
	}
	cases := []struct {
		name, isa string
		want      *impl
		wantErr   bool
	}{
		{"unset", "", best, false},
		{"avx512", "avx512", best, false},
		{"avx2", "avx2", upTo("avx2"), false},
		{"generic", "generic", generic, false},
		{"unknown", "sse9", best, true},
		{"wrong case", "AVX2", best, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := chooseKernel(tc.isa)
			if got != tc.want {
				t.Errorf("chooseKernel(%q) = %s, want %s", tc.isa, got.name, tc.want.name)
			}
			if (err != nil) != tc.wantErr {
				t.Errorf("chooseKernel(%q) error = %v, want error %v", tc.isa, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.isa) {
				t.Errorf("error %q does not name the value %q", err, tc.isa)
			}
		})
	}
}
