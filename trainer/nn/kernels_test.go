package nn

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/gemm"
)

// pathTests are the tests that prove the engine correct, run again on every kernel
// the CPU has by TestEveryKernel: the float64 reference, the finite-difference
// gradients of the conv kernels and of whole models, determinism, the packed against
// the BLAS convolutions, and PyTorch parity.
const pathTests = "^(TestKernelFromEnv|TestForwardAgainstFloat64Reference|TestConvBackward|TestModelBackward|TestDeterminism|TestForwardMatchesInference|TestPackedConvMatchesMatMul|TestGradientsMatchPyTorch)$"

// TestEveryKernel runs pathTests in a child test process for each kernel of
// gemm.Kernels() other than the one this process runs (that one the tests cover
// directly), with $TEXGRID_GEMM_ISA selecting it: on an AVX-512 machine the AVX2 and
// pure-Go kernels are proven too, as most volunteers' CPUs run them.
func TestEveryKernel(t *testing.T) {
	t.Parallel()
	if os.Getenv(gemm.EnvISA) != "" {
		t.Skipf("a child run for %s=%s", gemm.EnvISA, os.Getenv(gemm.EnvISA))
	}
	for _, k := range gemm.Kernels() {
		if k == gemm.Kernel() {
			continue
		}
		t.Run(k, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run", pathTests, "-test.count", "1", "-test.v")
			cmd.Env = append(os.Environ(), gemm.EnvISA+"="+k)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("tests on kernel %s: %v\n%s", k, err, out)
			}
			// The child must have run the tests on that kernel, not skipped them.
			for _, name := range []string{"TestKernelFromEnv", "TestConvBackward", "TestModelBackward", "TestDeterminism", "TestForwardAgainstFloat64Reference"} {
				if !strings.Contains(string(out), "--- PASS: "+name+" ") {
					t.Errorf("kernel %s: %s did not pass in the child run:\n%s", k, name, out)
				}
			}
		})
	}
}

// TestKernelFromEnv shows that the kernel named by $TEXGRID_GEMM_ISA is the one this
// process runs, and that convolutions use the packed GEMM wherever it has an
// assembly kernel (the BLAS otherwise), so TestEveryKernel's child runs test what
// they claim to.
func TestKernelFromEnv(t *testing.T) {
	t.Parallel()
	if err := gemm.EnvError(); err != nil {
		t.Fatal(err)
	}
	want := os.Getenv(gemm.EnvISA)
	if want == "" {
		ks := gemm.Kernels()
		want = ks[len(ks)-1]
	}
	if got := gemm.Kernel(); got != want {
		t.Fatalf("%s=%q runs kernel %q", gemm.EnvISA, os.Getenv(gemm.EnvISA), got)
	}
	if os.Getenv(EnvConvGEMM) != "" {
		return
	}
	// The generic Go kernel is slower than either BLAS, so it never runs them.
	wantConv := "packed/" + want
	if want == "generic" {
		wantConv = "blas/" + gemm.Backend()
	}
	if got := ConvEngine(); got != wantConv {
		t.Errorf("kernel %s: convolutions on %s, want %s", want, got, wantConv)
	}
}
