//go:build !(cgo && openblas)

package gemm

const backend = "gonum"

func setThreads(int) {}

// BLASCore names the kernels the BLAS chose for this CPU: "go" for gonum's pure-Go
// sgemm.
func BLASCore() string { return "go" }
