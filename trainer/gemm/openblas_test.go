//go:build cgo && openblas

package gemm

import "testing"

// TestOpenBLASSelected fails if the openblas build silently fell back to pure Go.
func TestOpenBLASSelected(t *testing.T) {
	if b := Backend(); b != "openblas" {
		t.Fatalf("built with the openblas tag but Backend() = %q", b)
	}
}
