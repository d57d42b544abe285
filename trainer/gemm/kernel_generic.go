package gemm

import (
	"fmt"
	"os"

	"github.com/texgrid/texgrid/trainer/gemm/internal/kern"
)

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

// generic is the pure-Go implementation; cur is the one in use, chosen at start-up
// (see chooseKernel), and envErr what was wrong with the environment's choice.
var (
	generic     = &impl{name: "generic", micro: kernGeneric, transpose8: transpose8Go}
	cur, envErr = chooseKernel(os.Getenv(EnvISA))
)

// EnvISA is the environment variable that caps the kernels at an instruction set:
// "avx2" runs the AVX2 kernels on a CPU with AVX-512 (as most volunteers' CPUs would),
// "generic" the pure-Go ones; "avx512" or empty leave the best the CPU has. It never
// raises the choice above what the CPU supports.
const EnvISA = "TEXGRID_GEMM_ISA"

// chooseKernel returns the best implementation the CPU runs, capped at isa (see
// EnvISA). An unknown isa leaves the best one and returns an error naming it.
func chooseKernel(isa string) (*impl, error) {
	avail := availableKernels()
	best := avail[len(avail)-1]
	if isa == "" {
		return best, nil
	}
	rank := map[string]int{"generic": 0, "avx2": 1, "avx512": 2}
	want, ok := rank[isa]
	if !ok {
		return best, fmt.Errorf("gemm: %s=%q is not one of avx512, avx2, generic", EnvISA, isa)
	}
	choice := generic
	for _, im := range avail {
		if rank[im.name] <= want {
			choice = im
		}
	}
	return choice, nil
}

// availableKernels lists the implementations this CPU and build can run, slowest
// first.
func availableKernels() []*impl {
	ims := []*impl{generic}
	if kern.AvailableAVX2 {
		ims = append(ims, avx2Impl)
	}
	if kern.Available {
		ims = append(ims, avx512)
	}
	return ims
}

// Kernels names the kernels this CPU and build can run, slowest first; Kernel() is
// the last of them unless $TEXGRID_GEMM_ISA caps it.
func Kernels() []string {
	var names []string
	for _, im := range availableKernels() {
		names = append(names, im.name)
	}
	return names
}

// EnvError reports an unusable $TEXGRID_GEMM_ISA (the kernels then are the best the
// CPU has); commands check it at start-up so that a typo does not go unnoticed.
func EnvError() error { return envErr }

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
