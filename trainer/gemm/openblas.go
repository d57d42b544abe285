//go:build cgo && openblas

package gemm

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int num_threads);
char* openblas_get_corename(void);
*/
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"
)

const backend = "openblas"

func init() {
	blas32.Use(netlib.Implementation{})
	// Single-threaded by default: the engine runs one product per worker goroutine.
	C.openblas_set_num_threads(1)
	threads.Store(1)
}

func setThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// BLASCore names the kernels the BLAS chose for this CPU: OpenBLAS's core name (for
// example "haswell" or "skylakex"; $OPENBLAS_CORETYPE can force one).
func BLASCore() string { return C.GoString(C.openblas_get_corename()) }
