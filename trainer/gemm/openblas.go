//go:build cgo && openblas

package gemm

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int num_threads);
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
