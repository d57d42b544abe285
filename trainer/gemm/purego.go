//go:build !(cgo && openblas)

package gemm

const backend = "gonum"

func setThreads(int) {}
