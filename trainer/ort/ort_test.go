package ort

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// requireORT skips the test when ONNX Runtime cannot be loaded, unless
// TEXGRID_REQUIRE_ORT=1 makes that a failure.
func requireORT(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_ORT") == "1" {
			t.Fatalf("TEXGRID_REQUIRE_ORT=1: %v", err)
		}
		t.Skipf("skipping, ONNX Runtime missing: %v", err)
	}
}

func resolveSpec(t testing.TB, js []byte, classes, size int) *spec.Resolved {
	t.Helper()
	s, err := spec.Parse(js)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(classes, size)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func shipped(t testing.TB, name string, classes, size int) *spec.Resolved {
	t.Helper()
	b, err := configs.Model(name)
	if err != nil {
		t.Fatal(err)
	}
	return resolveSpec(t, b, classes, size)
}

func classNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "c" + strconv.Itoa(i)
	}
	return out
}

// newModel returns a Go-engine model with He-initialised weights and, unlike nn.New,
// non-zero biases, so the bias wiring of the export is exercised too.
func newModel(t testing.TB, r *spec.Resolved, seed uint64) *nn.Model {
	t.Helper()
	m, err := nn.New(r, seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	for _, p := range m.Params() {
		if len(p.T.Shape) == 1 {
			for i := range p.T.Data {
				p.T.Data[i] = float32(0.1 * rng.NormFloat64())
			}
		}
	}
	return m
}

func export(t testing.TB, r *spec.Resolved, m *nn.Model) []byte {
	t.Helper()
	b, err := onnx.Export(r, m.Params(), classNames(r.Classes), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomFragments returns n fragments of uniform noise in the scaled pixel range.
func randomFragments(r *spec.Resolved, n int, seed uint64) *tensor.Tensor {
	rng := rand.New(rand.NewPCG(seed, 5))
	x := tensor.New(n, r.In[0].C, r.Size, r.Size)
	for i := range x.Data {
		x.Data[i] = float32(rng.IntN(256))/255 - 0.5
	}
	return x
}

// relErr is max|a-b| / max|b|: the error relative to the logit scale.
func relErr(a, b []float32) (rel, maxDiff, scale float64) {
	for i := range b {
		maxDiff = math.Max(maxDiff, math.Abs(float64(a[i]-b[i])))
		scale = math.Max(scale, math.Abs(float64(b[i])))
	}
	return maxDiff / scale, maxDiff, scale
}

func TestParityWithGoEngine(t *testing.T) {
	requireORT(t)
	t.Parallel()
	cases := []struct {
		name    string
		model   string
		classes int
		size    int
		batch   int
	}{
		{"tcnn-small 64px", "tcnn-small", 3, 64, 5},
		{"tcnn-small 96px", "tcnn-small", 7, 96, 4},
		{"tcnn-small 256px", "tcnn-small", 6, 256, 3},
		{"tcnn3 64px", "tcnn3", 4, 64, 3},
		{"tcnn3 96px", "tcnn3", 10, 96, 2},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := shipped(t, tc.model, tc.classes, tc.size)
			m := newModel(t, r, uint64(100+i))
			sess, err := Open(export(t, r, m), 2)
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			x := randomFragments(r, tc.batch, uint64(i))
			want := m.Forward(x, 2)
			got, err := sess.Run(x)
			if err != nil {
				t.Fatal(err)
			}
			if !tensor.SameShape(got.Shape, want.Shape) {
				t.Fatalf("ORT logits %v, Go engine %v", got.Shape, want.Shape)
			}
			rel, diff, scale := relErr(got.Data, want.Data)
			t.Logf("%s batch %d: max|diff| %.3g, max|logit| %.3g, relative %.3g", tc.name, tc.batch, diff, scale, rel)
			if rel > 1e-4 || math.IsNaN(rel) {
				t.Errorf("ORT and Go engine logits differ by %.3g relative to the logit scale (max diff %.3g, scale %.3g); want <= 1e-4", rel, diff, scale)
			}
			// Samples are independent: one fragment alone gives the same logits.
			one := &tensor.Tensor{Shape: []int{1, x.Shape[1], x.Shape[2], x.Shape[3]}, Data: x.Data[len(x.Data)/tc.batch*(tc.batch-1):]}
			got1, err := sess.Run(one)
			if err != nil {
				t.Fatal(err)
			}
			if rel1, _, _ := relErr(got1.Data, want.Data[len(want.Data)-tc.classes:]); rel1 > 1e-4 {
				t.Errorf("last sample alone differs by %.3g", rel1)
			}
		})
	}
}

func TestSessionInfo(t *testing.T) {
	requireORT(t)
	t.Parallel()
	r := shipped(t, "tcnn-small", 3, 64)
	m := newModel(t, r, 1)
	b, err := onnx.Export(r, m.Params(), []string{"bark", "brick", "sand"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := Open(b, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if strings.Join(sess.Classes, ",") != "bark,brick,sand" || sess.Size != 64 || sess.Channels != 1 || sess.Model != "tcnn-small" {
		t.Errorf("info %+v", sess.Info)
	}
	if path, version := Loaded(); path == "" || version == "" {
		t.Errorf("Loaded() = %q, %q", path, version)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Run(randomFragments(r, 1, 1)); err == nil || !strings.Contains(err.Error(), "closed session") {
		t.Errorf("run after close: %v", err)
	}
}

func TestOpenRejectsBadModels(t *testing.T) {
	requireORT(t)
	t.Parallel()
	r := shipped(t, "tcnn-small", 2, 64)
	good := export(t, r, newModel(t, r, 2))
	// Same-length renames keep the protobuf valid while changing the interface.
	renamedIn := bytes.ReplaceAll(good, []byte(onnx.InputName), []byte("fragmentz"))
	renamedOut := bytes.ReplaceAll(good, []byte(onnx.OutputName), []byte("scores"))
	st := []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\":{}}")
	cases := []struct {
		name  string
		model []byte
		is    error
		want  string
	}{
		{"empty file", nil, onnx.ErrNotONNX, "not an ONNX model"},
		{"text", []byte("this is a README, not a model"), onnx.ErrNotONNX, "not an ONNX model"},
		{"safetensors", st, onnx.ErrNotONNX, "not an ONNX model"},
		{"truncated", good[:len(good)-1000], onnx.ErrNotONNX, "not an ONNX model"},
		{"wrong input name", renamedIn, ErrBadModel, `inputs are ["fragmentz"], want one named "fragments"`},
		{"wrong output name", renamedOut, ErrBadModel, `one output named "logits"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(tc.model, 1)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want %v mentioning %q", err, tc.is, tc.want)
			}
		})
	}
}

func TestRunRejectsWrongShapes(t *testing.T) {
	requireORT(t)
	t.Parallel()
	rgb := resolveSpec(t, []byte(`{"name":"rgb","input_channels":3,"layers":[
		{"type":"conv","filters":4,"kernel":3},{"type":"relu"},{"type":"energy"},
		{"type":"dense","units":"classes"}]}`), 2, 32)
	rgbModel := export(t, rgb, newModel(t, rgb, 3))
	small := shipped(t, "tcnn-small", 2, 64)
	smallModel := export(t, small, newModel(t, small, 4))
	cases := []struct {
		name  string
		model []byte
		x     *tensor.Tensor
		want  string
	}{
		{"grey fragments into a 3-channel model", rgbModel, tensor.New(2, 1, 32, 32), "fragments are [2,1,32,32] but the model takes [N,3,32,32]: channels 1, want 3"},
		{"96px fragments into a 64px model", smallModel, tensor.New(1, 1, 96, 96), "height 96, want 64"},
		{"not square", smallModel, tensor.New(1, 1, 64, 65), "width 65, want 64"},
		{"rank 3", smallModel, tensor.New(1, 64, 64), "want [N,C,S,S]"},
		{"short data", smallModel, &tensor.Tensor{Shape: []int{2, 1, 64, 64}, Data: make([]float32, 64*64)}, "4096 values for shape [2 1 64 64]"},
		{"empty batch", smallModel, tensor.New(0, 1, 64, 64), "empty batch"},
		{"nil", smallModel, nil, "no input tensor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(tc.model, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Run(tc.x)
			if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v: want ErrShape mentioning %q", err, tc.want)
			}
			// The session still works after a rejected input.
			in := s.Channels
			ok := tensor.New(1, in, s.Size, s.Size)
			if _, err := s.Run(ok); err != nil {
				t.Errorf("good input after a bad one: %v", err)
			}
		})
	}
}

func TestSoftmax(t *testing.T) {
	t.Parallel()
	p := Softmax(&tensor.Tensor{Shape: []int{2, 3}, Data: []float32{1, 2, 3, 1000, 0, -1000}})
	want := []float64{0.09003057, 0.24472847, 0.66524096, 1, 0, 0}
	for i, w := range want {
		if math.Abs(float64(p.Data[i])-w) > 1e-6 {
			t.Errorf("p[%d] = %v, want %v", i, p.Data[i], w)
		}
	}
}

// TestLibraryPath runs sequentially (it sets the environment) before the parallel tests.
func TestLibraryPath(t *testing.T) {
	t.Setenv(EnvLibrary, "/from/env/libonnxruntime.so.1")
	if got := LibraryPath(); got != "/from/env/libonnxruntime.so.1" {
		t.Errorf("with %s set: %q", EnvLibrary, got)
	}
	SetLibraryPath("/from/flag/libonnxruntime.so.1")
	got := LibraryPath()
	SetLibraryPath("")
	if got != "/from/flag/libonnxruntime.so.1" {
		t.Errorf("with SetLibraryPath: %q", got)
	}
	t.Setenv(EnvLibrary, "")
	if got := LibraryPath(); !strings.HasSuffix(got, filepath.FromSlash(DefaultLibrary)) {
		t.Errorf("default: %q", got)
	}
}

// TestMissingLibrary runs this test binary again with TEXGRID_ORT_LIB pointing at a
// missing file and at a file that is not a library: a fresh process, since a loaded
// library stays loaded.
func TestMissingLibrary(t *testing.T) {
	t.Parallel()
	if lib := os.Getenv("TEXGRID_ORT_TEST_CHILD"); lib != "" {
		return // the child half is TestMissingLibraryChild
	}
	dir := t.TempDir()
	notLib := filepath.Join(dir, "libonnxruntime.so.1")
	if err := os.WriteFile(notLib, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		lib  string
		want []string
	}{
		{"missing file", filepath.Join(dir, "nope", "libonnxruntime.so.1"), []string{"ONNX Runtime is not available", filepath.Join(dir, "nope", "libonnxruntime.so.1"), "no such file", "make ort"}},
		{"not a library", notLib, []string{"ONNX Runtime is not available", "loading " + notLib, "make ort"}},
	}
	if !haveCgo {
		for i := range cases {
			cases[i].want = []string{"ONNX Runtime is not available", "CGO_ENABLED=0", "use the Go engine"}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestMissingLibraryChild$", "-test.v")
			cmd.Env = append(os.Environ(), "TEXGRID_ORT_TEST_CHILD=1", EnvLibrary+"="+tc.lib, "TEXGRID_REQUIRE_ORT=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child failed: %v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("child output does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestMissingLibraryChild is the child half of TestMissingLibrary.
func TestMissingLibraryChild(t *testing.T) {
	if os.Getenv("TEXGRID_ORT_TEST_CHILD") == "" {
		t.Skip("only run by TestMissingLibrary")
	}
	err := Available()
	if !errors.Is(err, ErrNoLibrary) {
		t.Fatalf("Available() = %v, want ErrNoLibrary", err)
	}
	r := shipped(t, "tcnn-small", 2, 64)
	b, xerr := onnx.Export(r, newModel(t, r, 1).Params(), classNames(2), nil)
	if xerr != nil {
		t.Fatal(xerr)
	}
	if _, oerr := Open(b, 1); !errors.Is(oerr, ErrNoLibrary) {
		t.Fatalf("Open without the library = %v, want ErrNoLibrary", oerr)
	}
	t.Logf("error: %v", err)
}

func TestClassifyImageMatchesGoEngine(t *testing.T) {
	requireORT(t)
	t.Parallel()
	path := shareddata.Path(t, "kylberg6", "canvas1", "canvas1-a-p001.png")
	g, err := data.LoadGray(path)
	if err != nil {
		t.Fatalf("shared test image: %v", err)
	}
	r := shipped(t, "tcnn-small", 6, 256)
	m := newModel(t, r, 11)
	sess, err := Open(export(t, r, m), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	got, err := ClassifyImage(sess, g, 0, 160)
	if err != nil {
		t.Fatal(err)
	}
	// The same grid through the Go engine, averaged the same way.
	frags := data.GridFragments(0, g.W, g.H, 256, 160)
	if got.Fragments != len(frags) || len(frags) != 9 {
		t.Fatalf("%d fragments, grid has %d (576 px, 256 px, stride 160: want 9)", got.Fragments, len(frags))
	}
	x := tensor.New(len(frags), 1, 256, 256)
	for i, f := range frags {
		if err := g.Cut(f, x.Data[i*256*256:(i+1)*256*256]); err != nil {
			t.Fatal(err)
		}
	}
	probs := Softmax(m.Forward(x, 2))
	want := make([]float64, 6)
	for i, p := range probs.Data {
		want[i%6] += float64(p) / float64(len(frags))
	}
	var sum float64
	for c := range want {
		sum += float64(got.Probs[c])
		if math.Abs(float64(got.Probs[c])-want[c]) > 1e-5 {
			t.Errorf("class %d: ORT mean probability %v, Go engine %v", c, got.Probs[c], want[c])
		}
	}
	if math.Abs(sum-1) > 1e-5 || got.Prob != got.Probs[got.Class] {
		t.Errorf("prediction %+v (probabilities sum to %v)", got, sum)
	}
	for c := range want {
		if want[c] > want[got.Class]+1e-6 {
			t.Errorf("argmax %d, but class %d has a higher mean probability", got.Class, c)
		}
	}
}

func TestClassifyImageRejects(t *testing.T) {
	requireORT(t)
	t.Parallel()
	r := shipped(t, "tcnn-small", 2, 64)
	sess, err := Open(export(t, r, newModel(t, r, 1)), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	img := &data.Gray{W: 100, H: 80, Pix: make([]uint8, 100*80)}
	cases := []struct {
		name         string
		g            *data.Gray
		size, stride int
		want         string
	}{
		{"image too small", &data.Gray{W: 50, H: 80, Pix: make([]uint8, 50*80)}, 0, 0, "the 50x80 image is smaller than the 64x64 fragments"},
		{"size differs from the model", img, 32, 0, "32 px fragments for a model that takes 64 px"},
		{"negative stride", img, 0, -1, "stride -1 is negative"},
		{"broken image", &data.Gray{W: 100, H: 80, Pix: make([]uint8, 10)}, 0, 0, "holds 10"},
		{"nil image", nil, 0, 0, "nil image"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ClassifyImage(sess, tc.g, tc.size, tc.stride)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	p, err := ClassifyImage(sess, img, 0, 0)
	if err != nil || p.Fragments != 4 {
		t.Errorf("100x80 image, 64 px, stride 64: %+v, %v (want 4 fragments)", p, err)
	}
}

// goRunner runs the Go engine behind the Runner interface.
type goRunner struct{ m *nn.Model }

func (g goRunner) Run(x *tensor.Tensor) (*tensor.Tensor, error) { return g.m.Infer(x, 2) }

// TestClassifyWithGoEngine needs no ONNX Runtime: Classify over the Go engine gives the
// mean of the per-fragment softmax over the grid, as computed here by hand in one batch.
func TestClassifyWithGoEngine(t *testing.T) {
	t.Parallel()
	g := &data.Gray{W: 150, H: 97, Pix: make([]uint8, 150*97)}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range g.Pix {
		g.Pix[i] = uint8(rng.IntN(256))
	}
	r := shipped(t, "tcnn-small", 4, 64)
	m := newModel(t, r, 8)
	got, err := Classify(goRunner{m}, g, 64, 20)
	if err != nil {
		t.Fatal(err)
	}
	frags := data.GridFragments(0, g.W, g.H, 64, 20)
	// x at 0, 20, 40, 60, 80, 86 and y at 0, 20, 33.
	if got.Fragments != len(frags) || len(frags) != 18 {
		t.Fatalf("%d fragments, grid has %d, want 18", got.Fragments, len(frags))
	}
	x := tensor.New(len(frags), 1, 64, 64)
	for i, f := range frags {
		if err := g.Cut(f, x.Data[i*64*64:(i+1)*64*64]); err != nil {
			t.Fatal(err)
		}
	}
	probs := Softmax(m.Forward(x, 2))
	for c := range 4 {
		var want float64
		for i := range frags {
			want += float64(probs.Data[i*4+c]) / float64(len(frags))
		}
		if math.Abs(float64(got.Probs[c])-want) > 1e-6 {
			t.Errorf("class %d: %v, want %v", c, got.Probs[c], want)
		}
	}
	if _, err := Classify(goRunner{m}, g, 32, 0); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("32 px fragments into a 64 px Go model: %v", err)
	}
}

// TestRunConcurrently: one session serves several goroutines at once with the same
// answers as serial calls.
func TestRunConcurrently(t *testing.T) {
	requireORT(t)
	t.Parallel()
	r := shipped(t, "tcnn-small", 3, 64)
	sess, err := Open(export(t, r, newModel(t, r, 21)), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	const workers = 4
	inputs := make([]*tensor.Tensor, workers)
	want := make([]*tensor.Tensor, workers)
	for i := range inputs {
		inputs[i] = randomFragments(r, 1+i, uint64(i))
		if want[i], err = sess.Run(inputs[i]); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, workers)
	for i := range workers {
		go func() {
			for range 5 {
				got, err := sess.Run(inputs[i])
				if err != nil {
					errs <- err
					return
				}
				if !slices.Equal(got.Data, want[i].Data) {
					errs <- fmt.Errorf("worker %d: logits differ from the serial run", i)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
