package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// testSpec has every layer kind, odd sizes, strides and padding.
const testSpec = `{
  "name": "test-all-layers", "input_channels": 2,
  "layers": [
    {"type": "conv", "filters": 3, "kernel": 3, "stride": 2, "pad": 1},
    {"type": "relu"},
    {"type": "maxpool", "kernel": 2, "stride": 1},
    {"type": "conv", "filters": 4, "kernel": 3, "stride": 1, "pad": 1},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.3},
    {"type": "energy"},
    {"type": "dense", "units": 5},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": "classes"}
  ]}`

func resolve(t testing.TB, js string, classes, size int) *spec.Resolved {
	t.Helper()
	s, err := spec.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(classes, size)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64() * scale)
	}
	return s
}

// checkGrad compares analytic[j] with the central difference of f in x[j], for up to
// limit elements spread over x. f must be computed from x's current values.
func checkGrad(t *testing.T, what string, x, analytic []float32, f func() float64, eps, tol float64, limit int) {
	t.Helper()
	step := max(1, len(x)/limit)
	bad := 0
	for j := 0; j < len(x); j += step {
		old := x[j]
		x[j] = old + float32(eps)
		up := f()
		x[j] = old - float32(eps)
		down := f()
		x[j] = old
		num := (up - down) / (2 * eps)
		if d := math.Abs(num - float64(analytic[j])); d > tol*(1+math.Abs(num)) {
			bad++
			if bad <= 5 {
				t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", what, j, analytic[j], num)
			}
		}
	}
}

// dot returns sum(y*r) in float64: a scalar loss whose gradient with respect to y is r.
func dot(y, r []float32) float64 {
	var s float64
	for i := range y {
		s += float64(y[i]) * float64(r[i])
	}
	return s
}

func TestConvBackward(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                  string
		cin, size, f, k, s, p int
		withDX                bool
	}{
		{"k3s1p1", 2, 7, 3, 3, 1, 1, true},
		{"k3s2p1", 3, 8, 2, 3, 2, 1, true},
		{"k5s1p2", 1, 9, 4, 5, 1, 2, true},
		{"k11s4p2 like conv1", 1, 23, 2, 11, 4, 2, true},
		{"k2s3p0 gaps", 2, 10, 3, 2, 3, 0, true},
		{"no input grad", 2, 6, 3, 3, 1, 0, false},
		{"several im2col chunks", 16, 64, 3, 5, 1, 2, true},
		{"several strided chunks", 8, 256, 2, 5, 2, 2, true},
	}
	for _, tc := range cases {
		for _, packed := range []bool{false, true} {
			name := tc.name + "/MatMul"
			if packed {
				name = tc.name + "/MulPacked"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				oh := (tc.size+2*tc.p-tc.k)/tc.s + 1
				l := &layerInfo{Layer: spec.Layer{Type: spec.Conv, Filters: tc.f, Kernel: tc.k, Stride: tc.s, Pad: tc.p},
					in: spec.Shape{C: tc.cin, H: tc.size, W: tc.size}, out: spec.Shape{C: tc.f, H: oh, W: oh}}
				rng := rand.New(rand.NewPCG(7, uint64(tc.k)))
				kk := tc.cin * tc.k * tc.k
				x := randSlice(rng, l.in.Size(), 1)
				wt := randSlice(rng, tc.f*kk, 0.5)
				b := randSlice(rng, tc.f, 0.5)
				r := randSlice(rng, l.out.Size(), 1)
				if tc.name == "several im2col chunks" || tc.name == "several strided chunks" {
					if r := chunkRows(l); r >= l.out.H {
						t.Fatalf("one chunk of %d rows covers all %d output rows", r, l.out.H)
					}
				}
				var pw *packedWeights
				if packed {
					pw = newPackedWeights(l, true)
				}
				cols := make([]float32, colsSize(l))
				planes := make([]float32, phaseSize(l))
				y := make([]float32, l.out.Size())
				loss := func() float64 {
					if pw != nil {
						pw.pack(l, wt, false) // checkGrad moves the weights
					}
					convForward(l, pw, wt, b, x, y, cols, planes, false)
					return dot(y, r)
				}
				gw := make([]float32, len(wt))
				gb := make([]float32, len(b))
				var dx []float32
				if tc.withDX {
					dx = make([]float32, len(x))
				}
				if pw != nil {
					pw.pack(l, wt, true)
				}
				convBackward(l, pw, wt, x, r, gw, gb, dx, cols, make([]float32, len(cols)), planes, make([]float32, len(planes)))
				checkGrad(t, "dW", wt, gw, loss, 0.25, 2e-3, 200) // linear in W: a large step has no truncation error
				checkGrad(t, "db", b, gb, loss, 0.25, 2e-3, 200)
				if tc.withDX {
					checkGrad(t, "dx", x, dx, loss, 0.25, 2e-3, 200)
				}
			})
		}
	}
}

func TestPointwiseBackward(t *testing.T) {
	t.Parallel()
	sh := spec.Shape{C: 3, H: 6, W: 6}
	cases := []struct {
		name string
		out  spec.Shape
		fwd  func(x, y []float32)
		bwd  func(x, y, dy, dx []float32)
	}{
		{"maxpool k3 s2", spec.Shape{C: 3, H: 2, W: 2}, nil, nil},
		{"maxpool k2 s1", spec.Shape{C: 3, H: 5, W: 5}, nil, nil},
		{"maxpool relu", spec.Shape{C: 3, H: 2, W: 2}, nil, nil},
		{"maxpool relu idx", spec.Shape{C: 3, H: 2, W: 2}, nil, nil},
		{"energy", spec.Shape{C: 3, H: 1, W: 1},
			func(x, y []float32) { energyForward(&layerInfo{in: sh}, x, y) },
			func(x, y, dy, dx []float32) { energyBackward(&layerInfo{in: sh}, dy, dx) }},
		{"relu", sh,
			func(x, y []float32) { copy(y, x); relu(y) },
			func(x, y, dy, dx []float32) { copy(y, x); relu(y); copy(dx, dy); reluBackward(y, dx) }},
		{"dropout", sh,
			func(x, y []float32) { dropoutForward(0.4, true, 99, 2, 1, x, y, make([]float32, len(y))) },
			func(x, y, dy, dx []float32) {
				m := make([]float32, len(y))
				dropoutForward(0.4, true, 99, 2, 1, x, make([]float32, len(y)), m)
				copy(dx, dy)
				mulInPlace(dx, m)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.fwd == nil { // maxpool: kernel and stride from the output size
				k, s := 3, 2
				if tc.out.H == 5 {
					k, s = 2, 1
				}
				l := &layerInfo{Layer: spec.Layer{Type: spec.MaxPool, Kernel: k, Stride: s}, in: sh, out: tc.out}
				relu := strings.HasPrefix(tc.name, "maxpool relu")
				var idx []int32
				if tc.name == "maxpool relu idx" {
					idx = make([]int32, tc.out.Size())
				}
				tc.fwd = func(x, y []float32) { maxPoolForward(l, x, y, idx, relu) }
				tc.bwd = func(x, y, dy, dx []float32) {
					maxPoolForward(l, x, y, idx, relu)
					maxPoolBackward(l, x, y, dy, dx, idx, relu)
				}
			}
			rng := rand.New(rand.NewPCG(3, 4))
			// Distinct values at least 0.05 apart and away from 0, so eps never crosses a kink.
			x := make([]float32, sh.Size())
			for i, p := range rng.Perm(len(x)) {
				x[i] = float32(p-len(x)/2)*0.05 + 0.025
			}
			r := randSlice(rng, tc.out.Size(), 1)
			y := make([]float32, tc.out.Size())
			dx := make([]float32, len(x))
			tc.bwd(x, y, r, dx)
			checkGrad(t, "dx", x, dx, func() float64 { tc.fwd(x, y); return dot(y, r) }, 1e-3, 1e-3, 1000)
		})
	}
}

func TestDropoutStatistics(t *testing.T) {
	t.Parallel()
	x := make([]float32, 100000)
	for i := range x {
		x[i] = 1
	}
	y := make([]float32, len(x))
	m := make([]float32, len(x))
	dropoutForward(0.5, true, 1, 0, 0, x, y, m)
	var sum float64
	zeros := 0
	for _, v := range y {
		sum += float64(v)
		if v == 0 {
			zeros++
		}
	}
	if mean := sum / float64(len(y)); math.Abs(mean-1) > 0.02 {
		t.Errorf("inverted dropout mean %g, want about 1", mean)
	}
	if share := float64(zeros) / float64(len(y)); math.Abs(share-0.5) > 0.01 {
		t.Errorf("dropped %g of the elements, want about 0.5", share)
	}
	dropoutForward(0.5, false, 1, 0, 0, x, y, m)
	for i, v := range y {
		if v != 1 {
			t.Fatalf("inference dropout changed element %d to %g", i, v)
		}
	}
}

func TestSoftmaxXentBackward(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	n, c := 4, 3
	logits := randSlice(rng, n*c, 2)
	labels := []int{0, 2, 1, 2}
	probs := make([]float32, n*c)
	d := make([]float32, n*c)
	softmaxXent(logits, probs, d, labels, n, c)
	checkGrad(t, "dlogits", logits, d, func() float64 {
		l, _ := softmaxXent(logits, probs, nil, labels, n, c)
		return l / float64(n)
	}, 1e-3, 1e-3, 100)
}

// modelLoss is the mean training loss of the batch in ws with dropout seed.
func modelLoss(ws *Workspace, n int, labels []int, seed uint64) float64 {
	logits := ws.Forward(n, true, seed)
	probs := make([]float32, len(logits))
	l, _ := softmaxXent(logits, probs, nil, labels, n, ws.m.r.Classes)
	return l / float64(n)
}

func TestModelBackward(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		spec     string
		channels int
		size     int
		threads  int
	}{
		{"all layers 1 thread", testSpec, 2, 11, 1},
		{"all layers 3 threads", testSpec, 2, 11, 3},
		{"no conv", `{"name":"flat","input_channels":3,"layers":[{"type":"energy"},{"type":"dense","units":4},
			{"type":"relu"},{"type":"dense","units":"classes"}]}`, 3, 5, 2},
		{"pool first, 5x5 pool", `{"name":"pool-first","layers":[{"type":"maxpool","kernel":2},{"type":"conv","filters":3,"kernel":3},
			{"type":"relu"},{"type":"maxpool","kernel":5,"stride":1},{"type":"energy"},{"type":"dense","units":"classes"}]}`, 1, 16, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := resolve(t, tc.spec, 3, tc.size)
			m, err := New(r, 1)
			if err != nil {
				t.Fatal(err)
			}
			const n = 5
			ws, err := NewWorkspace(m, n, tc.threads)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(8, 9))
			copy(ws.Input(n), randSlice(rng, n*r.In[0].Size(), 1))
			labels := []int{0, 1, 2, 1, 0}
			if _, _, err := ws.TrainBatch(n, labels, 42); err != nil {
				t.Fatal(err)
			}
			grads := ws.Grads()
			for i, p := range m.Params() {
				g := append([]float32(nil), grads[i].T.Data...)
				checkGrad(t, p.Name, p.T.Data, g, func() float64 { return modelLoss(ws, n, labels, 42) }, 1e-3, 2e-2, 60)
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	r := resolve(t, testSpec, 3, 11)
	run := func(threads int) []tensor.Named {
		m, err := New(r, 11)
		if err != nil {
			t.Fatal(err)
		}
		const n = 7
		ws, err := NewWorkspace(m, n, threads)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		copy(ws.Input(n), randSlice(rng, n*r.In[0].Size(), 1))
		if _, _, err := ws.TrainBatch(n, []int{0, 1, 2, 0, 1, 2, 0}, 5); err != nil {
			t.Fatal(err)
		}
		var out []tensor.Named
		for _, g := range ws.Grads() {
			out = append(out, tensor.Named{Name: g.Name, T: g.T.Clone()})
		}
		return out
	}
	a, b := run(2), run(2)
	for i := range a {
		for j := range a[i].T.Data {
			if a[i].T.Data[j] != b[i].T.Data[j] {
				t.Fatalf("%s[%d] differs between identical runs: %g vs %g", a[i].Name, j, a[i].T.Data[j], b[i].T.Data[j])
			}
		}
	}
	// The trunk's partial sums belong to fixed chunks of the batch, not to threads,
	// and this model's dense layers are too small to be split, so here even the thread
	// count does not change a bit.
	for _, threads := range []int{1, 3, 8} {
		c := run(threads)
		for i := range a {
			for j := range a[i].T.Data {
				if math.Float32bits(a[i].T.Data[j]) != math.Float32bits(c[i].T.Data[j]) {
					t.Fatalf("%s[%d]: 2 threads %g, %d threads %g", a[i].Name, j, a[i].T.Data[j], threads, c[i].T.Data[j])
				}
			}
		}
	}
}

func TestNewIsDeterministicAndHe(t *testing.T) {
	t.Parallel()
	r := resolve(t, `{"name":"he","layers":[{"type":"conv","filters":64,"kernel":5},{"type":"energy"},{"type":"dense","units":"classes"}]}`, 2, 16)
	a, _ := New(r, 3)
	b, _ := New(r, 3)
	c, _ := New(r, 4)
	w := a.Params()[0].T.Data
	var ss float64
	for i, v := range w {
		if v != b.Params()[0].T.Data[i] {
			t.Fatal("same seed gave different weights")
		}
		ss += float64(v) * float64(v)
	}
	if w[0] == c.Params()[0].T.Data[0] && w[1] == c.Params()[0].T.Data[1] {
		t.Error("different seeds gave the same weights")
	}
	if std, want := math.Sqrt(ss/float64(len(w))), math.Sqrt(2.0/25); math.Abs(std-want) > 0.05*want {
		t.Errorf("conv weight std %g, want He %g", std, want)
	}
	for _, v := range a.Params()[1].T.Data {
		if v != 0 {
			t.Fatal("bias not zero")
		}
	}
}

func TestSetParams(t *testing.T) {
	t.Parallel()
	r := resolve(t, testSpec, 3, 11)
	good := func() []tensor.Named {
		m, _ := New(r, 99)
		var out []tensor.Named
		for _, p := range m.Params() {
			out = append(out, tensor.Named{Name: p.Name, T: p.T.Clone()})
		}
		return out
	}
	cases := []struct {
		name   string
		mutate func([]tensor.Named) []tensor.Named
	}{
		{"missing tensor", func(ps []tensor.Named) []tensor.Named { return ps[1:] }},
		{"unknown name", func(ps []tensor.Named) []tensor.Named { ps[0].Name = "conv9.weight"; return ps }},
		{"wrong shape", func(ps []tensor.Named) []tensor.Named { ps[0].T = tensor.New(3, 2, 3, 4); return ps }},
		{"duplicate", func(ps []tensor.Named) []tensor.Named { ps[1] = ps[0]; return ps }},
		{"nil tensor", func(ps []tensor.Named) []tensor.Named { ps[2].T = nil; return ps }},
		{"short data", func(ps []tensor.Named) []tensor.Named { ps[0].T.Data = ps[0].T.Data[:3]; return ps }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _ := New(r, 1)
			before := m.Params()[0].T.Clone()
			err := m.SetParams(tc.mutate(good()))
			if !errors.Is(err, ErrShape) {
				t.Fatalf("SetParams error %v, want ErrShape", err)
			}
			for i, v := range m.Params()[0].T.Data {
				if v != before.Data[i] {
					t.Fatal("a failed SetParams changed the weights")
				}
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		t.Parallel()
		m, _ := New(r, 1)
		ps := good()
		ps[0], ps[1] = ps[1], ps[0] // order does not matter
		if err := m.SetParams(ps); err != nil {
			t.Fatal(err)
		}
		if m.Params()[0].T.Data[0] != tensor.Find(ps, "conv1.weight").Data[0] {
			t.Fatal("weights not copied")
		}
	})
}

func TestBadInputs(t *testing.T) {
	t.Parallel()
	r := resolve(t, testSpec, 3, 11)
	m, _ := New(r, 1)
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"forward wrong size", func() error { _, err := m.Infer(tensor.New(1, 2, 10, 11), 1); return err }, ErrShape},
		{"forward wrong channels", func() error { _, err := m.Infer(tensor.New(1, 1, 11, 11), 1); return err }, ErrShape},
		{"forward 3-d", func() error { _, err := m.Infer(tensor.New(2, 11, 11), 1); return err }, ErrShape},
		{"forward empty batch", func() error { _, err := m.Infer(tensor.New(0, 2, 11, 11), 1); return err }, ErrShape},
		{"forward nil", func() error { _, err := m.Infer(nil, 1); return err }, ErrShape},
		{"forward zero threads", func() error { _, err := m.Infer(tensor.New(1, 2, 11, 11), 0); return err }, nil},
		{"workspace batch 0", func() error { _, err := NewWorkspace(m, 0, 1); return err }, nil},
		{"train batch 0", func() error { ws, _ := NewWorkspace(m, 2, 1); _, _, err := ws.TrainBatch(0, nil, 1); return err }, ErrShape},
		{"train batch too big", func() error {
			ws, _ := NewWorkspace(m, 2, 1)
			_, _, err := ws.TrainBatch(3, []int{0, 0, 0}, 1)
			return err
		}, ErrShape},
		{"labels count", func() error { ws, _ := NewWorkspace(m, 2, 1); _, _, err := ws.TrainBatch(2, []int{0}, 1); return err }, ErrShape},
		{"label range", func() error {
			ws, _ := NewWorkspace(m, 2, 1)
			_, _, err := ws.TrainBatch(2, []int{0, 3}, 1)
			return err
		}, ErrShape},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.call()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Error("Forward with a wrong shape did not panic")
		}
	}()
	m.Forward(tensor.New(1, 2, 3, 3), 1)
}

func TestForwardMatchesInference(t *testing.T) {
	t.Parallel()
	r := resolve(t, testSpec, 3, 11)
	m, _ := New(r, 2)
	rng := rand.New(rand.NewPCG(2, 2))
	x := tensor.New(4, 2, 11, 11)
	copy(x.Data, randSlice(rng, len(x.Data), 1))
	a := m.Forward(x, 1)
	b := m.Forward(x, 2)
	one := tensor.New(1, 2, 11, 11)
	copy(one.Data, x.Data[2*242:3*242])
	c := m.Forward(one, 1)
	for j := 0; j < 3; j++ {
		if a.Data[j] != b.Data[j] && math.Abs(float64(a.Data[j]-b.Data[j])) > 1e-5 {
			t.Errorf("logit %d: 1 thread %g, 2 threads %g", j, a.Data[j], b.Data[j])
		}
		if d := math.Abs(float64(a.Data[2*3+j] - c.Data[j])); d > 1e-5 {
			t.Errorf("sample 2 logit %d: in batch %g, alone %g", j, a.Data[6+j], c.Data[j])
		}
	}
}

// TestPackedConvMatchesMatMul trains one batch through both GEMM paths of the
// convolutions, gemm.MulPacked with fused bias and ReLU and gemm.MatMul, and requires
// the same logits and gradients up to float32 rounding. (The float64 reference and
// PyTorch parity tests run whichever path this machine uses by default.)
func TestPackedConvMatchesMatMul(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		r    *spec.Resolved
	}{
		{"all layers 11px", resolve(t, testSpec, 3, 11)},
	}
	small, err := shippedSpec(t, "tcnn-small").Resolve(4, 67)
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		name string
		r    *spec.Resolved
	}{"tcnn-small 67px", small})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 4
			rng := rand.New(rand.NewPCG(8, 8))
			x := randSlice(rng, n*tc.r.In[0].Size(), 0.5)
			labels := []int{0, 1, 2, 1}
			run := func(packed bool) (logits []float32, grads []tensor.Named) {
				m, err := New(tc.r, 3)
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range m.Params() { // non-zero biases exercise the fused bias
					if len(p.T.Shape) == 1 {
						copy(p.T.Data, randSlice(rand.New(rand.NewPCG(9, uint64(len(p.T.Data)))), len(p.T.Data), 0.1))
					}
				}
				ws, err := newWorkspace(m, n, 2, packed)
				if err != nil {
					t.Fatal(err)
				}
				copy(ws.Input(n), x)
				if _, _, err := ws.TrainBatch(n, labels, 5); err != nil {
					t.Fatal(err)
				}
				return append([]float32(nil), ws.acts[len(ws.acts)-1][:n*tc.r.Classes]...), ws.Grads()
			}
			la, ga := run(false)
			lb, gb := run(true)
			closeTo(t, "logits (MulPacked vs MatMul)", lb, la)
			for i := range ga {
				closeTo(t, "grad "+ga[i].Name+" (MulPacked vs MatMul)", gb[i].T.Data, ga[i].T.Data)
			}
		})
	}
}

// closeTo reports the first element of got that differs from want by more than 1e-4 of
// want's largest magnitude (plus 1e-7): float32 rounding of sums taken in another order.
func closeTo(t *testing.T, what string, got, want []float32) {
	t.Helper()
	var scale float64
	for _, v := range want {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	for j := range got {
		if d := math.Abs(float64(got[j] - want[j])); d > 1e-4*scale+1e-7 {
			t.Errorf("%s[%d]: %g, want %g (largest |value| %g)", what, j, got[j], want[j], scale)
			return
		}
	}
}
