package train

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/spec"
)

// smallSpec is a scaled-down Texture-CNN for fast tests.
const smallSpec = `{
  "name": "test-tcnn", "input_channels": 1,
  "layers": [
    {"type": "conv", "filters": 6, "kernel": 5, "stride": 2, "pad": 2},
    {"type": "relu"},
    {"type": "maxpool", "kernel": 3, "stride": 2},
    {"type": "conv", "filters": 8, "kernel": 3, "pad": 1},
    {"type": "relu"},
    {"type": "energy"},
    {"type": "dense", "units": 16},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": "classes"}
  ]}`

const size = 24

// textures generates two texture classes: class 0 is stripes of random period, phase
// and orientation plus a little noise, class 1 is uniform noise.
type textures struct {
	n    int
	seed uint64
	fail int // Sample fails for this index when >= 0
}

func (s *textures) Len() int { return s.n }

var errInjected = errors.New("injected failure")

func (s *textures) Sample(i int, dst []float32) (int, error) {
	if i == s.fail {
		return 0, errInjected
	}
	rng := rand.New(rand.NewPCG(s.seed, uint64(i)))
	label := i % 2
	period := 3 + rng.Float64()*5
	phase := rng.Float64() * 2 * math.Pi
	vertical := rng.IntN(2) == 0
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			var v float64
			if label == 0 {
				t := float64(x)
				if vertical {
					t = float64(y)
				}
				v = 0.4*math.Sin(2*math.Pi*t/period+phase) + 0.05*rng.NormFloat64()
			} else {
				v = rng.Float64() - 0.5
			}
			dst[y*size+x] = float32(v)
		}
	}
	return label, nil
}

func newModel(t testing.TB, seed uint64) *nn.Model {
	t.Helper()
	s, err := spec.Parse([]byte(smallSpec))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(2, size)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.New(r, seed)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var baseCfg = Config{Epochs: 4, BatchSize: 16, LR: 0.02, Momentum: 0.9, WeightDecay: 5e-4, Seed: 7, Threads: 2}

func runAll(t *testing.T, r *Run) []StepInfo {
	t.Helper()
	var infos []StepInfo
	for !r.Done() {
		info, err := r.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		infos = append(infos, info)
	}
	return infos
}

func TestLearnsTextures(t *testing.T) {
	t.Parallel()
	m := newModel(t, 1)
	src := &textures{n: 160, seed: 1, fail: -1}
	test := &textures{n: 100, seed: 2, fail: -1}
	before, err := Evaluate(context.Background(), m, test, []string{"stripes", "noise"}, 2, 32)
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseCfg
	cfg.Epochs = 8
	r, err := NewRun(m, src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	infos := runAll(t, r)
	if len(infos) != 8*10 || !infos[len(infos)-1].Done || r.Progress() != 1 {
		t.Fatalf("%d steps, last %+v, progress %g", len(infos), infos[len(infos)-1], r.Progress())
	}
	first := (infos[0].Loss + infos[1].Loss + infos[2].Loss) / 3
	n := len(infos)
	last := (infos[n-1].Loss + infos[n-2].Loss + infos[n-3].Loss) / 3
	if !(last < 0.5*first) {
		t.Errorf("training loss went from %.3f to %.3f; want it at least halved", first, last)
	}
	after, err := Evaluate(context.Background(), m, test, []string{"stripes", "noise"}, 2, 32)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.3f -> %.3f, test accuracy %.2f -> %.2f", first, last, before.Accuracy(), after.Accuracy())
	if after.Accuracy() < 0.9 || after.Accuracy() <= before.Accuracy() {
		t.Errorf("test accuracy %.2f before, %.2f after; want >= 0.9 and a rise", before.Accuracy(), after.Accuracy())
	}
	rep, err := after.Report()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accuracy != after.Accuracy() || rep.Samples != 100 || len(rep.F1) != 2 {
		t.Errorf("report %+v disagrees with accuracy %g", rep, after.Accuracy())
	}
	if after.Loss >= before.Loss {
		t.Errorf("test loss %.3f before, %.3f after", before.Loss, after.Loss)
	}
}

func weights(m *nn.Model) [][]float32 {
	var out [][]float32
	for _, p := range m.Params() {
		out = append(out, append([]float32(nil), p.T.Data...))
	}
	return out
}

func sameWeights(t *testing.T, what string, a, b [][]float32) {
	t.Helper()
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				t.Fatalf("%s: tensor %d element %d: %g vs %g", what, i, j, a[i][j], b[i][j])
			}
		}
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	src := &textures{n: 50, seed: 3, fail: -1}
	train := func(threads int) [][]float32 {
		m := newModel(t, 5)
		cfg := baseCfg
		cfg.Threads = threads
		r, err := NewRun(m, src, cfg)
		if err != nil {
			t.Fatal(err)
		}
		runAll(t, r)
		return weights(m)
	}
	sameWeights(t, "two runs with 2 threads", train(2), train(2))
	sameWeights(t, "two runs with 3 threads", train(3), train(3))
}

func TestCheckpointResume(t *testing.T) {
	t.Parallel()
	src := &textures{n: 45, seed: 4, fail: -1} // 3 batches of 16, the last short
	m := newModel(t, 9)
	r, _ := NewRun(m, src, baseCfg)
	runAll(t, r)
	want := weights(m)

	for _, stopAt := range []int{1, 3, 5, 11} {
		m2 := newModel(t, 9)
		r2, _ := NewRun(m2, src, baseCfg)
		for k := 0; k < stopAt; k++ {
			if _, err := r2.Step(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		state, err := r2.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		m3 := newModel(t, 1234) // different initial weights: the checkpoint must replace them
		r3, err := Resume(m3, src, baseCfg, state)
		if err != nil {
			t.Fatal(err)
		}
		if r3.Progress() != r2.Progress() {
			t.Errorf("resumed progress %g, want %g", r3.Progress(), r2.Progress())
		}
		runAll(t, r3)
		sameWeights(t, "resumed run", want, weights(m3))
	}
}

func TestBadCheckpoints(t *testing.T) {
	t.Parallel()
	src := &textures{n: 20, seed: 4, fail: -1}
	m := newModel(t, 9)
	r, _ := NewRun(m, src, baseCfg)
	r.Step(context.Background())
	state, _ := r.Checkpoint()
	other := baseCfg
	other.LR = 0.5
	cases := []struct {
		name  string
		state []byte
		src   Source
		cfg   Config
	}{
		{"empty", nil, src, baseCfg},
		{"bad magic", append([]byte("XXXXXXXX"), state[8:]...), src, baseCfg},
		{"truncated", state[:len(state)-3], src, baseCfg},
		{"header cut", state[:20], src, baseCfg},
		{"other config", state, src, other},
		{"other source size", state, &textures{n: 21, seed: 4, fail: -1}, baseCfg},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m2 := newModel(t, 3)
			before := weights(m2)
			_, err := Resume(m2, tc.src, tc.cfg, tc.state)
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v, want ErrBadCheckpoint", err)
			}
			sameWeights(t, "model after a failed resume", before, weights(m2))
		})
	}
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	src := &textures{n: 10, seed: 1, fail: -1}
	cases := []struct {
		name string
		mod  func(*Config)
	}{
		{"batch 0", func(c *Config) { c.BatchSize = 0 }},
		{"epochs 0", func(c *Config) { c.Epochs = 0 }},
		{"lr 0", func(c *Config) { c.LR = 0 }},
		{"lr NaN", func(c *Config) { c.LR = math.NaN() }},
		{"momentum 1", func(c *Config) { c.Momentum = 1 }},
		{"lr decay above 1", func(c *Config) { c.LRDecay = 1.5 }},
		{"lr decay negative", func(c *Config) { c.LRDecay = -0.1 }},
		{"lr decay NaN", func(c *Config) { c.LRDecay = math.NaN() }},
		{"negative decay", func(c *Config) { c.WeightDecay = -1 }},
		{"threads 0", func(c *Config) { c.Threads = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseCfg
			tc.mod(&cfg)
			if _, err := NewRun(newModel(t, 1), src, cfg); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := NewRun(newModel(t, 1), &textures{n: 0, fail: -1}, baseCfg); !errors.Is(err, ErrEmptySource) {
		t.Fatalf("empty source: %v", err)
	}
}

func TestSourceErrorLeavesRunIntact(t *testing.T) {
	t.Parallel()
	src := &textures{n: 30, seed: 6, fail: -1}
	m := newModel(t, 2)
	r, _ := NewRun(m, src, baseCfg)
	runAll(t, r)
	want := weights(m)

	bad := &textures{n: 30, seed: 6, fail: -1}
	m2 := newModel(t, 2)
	r2, _ := NewRun(m2, bad, baseCfg)
	r2.Step(context.Background())
	bad.fail = r2.perm[16] // a sample of the next batch
	before := weights(m2)
	if _, err := r2.Step(context.Background()); !errors.Is(err, errInjected) {
		t.Fatalf("error %v, want the source's", err)
	}
	sameWeights(t, "weights after a failed step", before, weights(m2))
	bad.fail = -1
	runAll(t, r2)
	sameWeights(t, "weights after retrying", want, weights(m2))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r2.Step(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled step: %v", err)
	}
}

func TestEvaluateErrors(t *testing.T) {
	t.Parallel()
	m := newModel(t, 1)
	src := &textures{n: 10, seed: 1, fail: 3}
	if _, err := Evaluate(context.Background(), m, src, []string{"a"}, 1, 4); err == nil {
		t.Error("wrong class count accepted")
	}
	if _, err := Evaluate(context.Background(), m, src, []string{"a", "b"}, 1, 4); !errors.Is(err, errInjected) {
		t.Errorf("source error: %v", err)
	}
	if _, err := Evaluate(context.Background(), m, &textures{n: 10, fail: -1}, []string{"a", "b"}, 1, 0); err == nil {
		t.Error("batch 0 accepted")
	}
}

// epochTextures shifts the texture seed every epoch and records the calls.
type epochTextures struct {
	textures
	calls []int
}

func (s *epochTextures) SetEpoch(e int) error {
	s.calls = append(s.calls, e)
	s.seed = 100 + uint64(e)
	return nil
}

func TestEpochSource(t *testing.T) {
	t.Parallel()
	full := &epochTextures{textures: textures{n: 40, fail: -1}}
	m := newModel(t, 3)
	r, _ := NewRun(m, full, baseCfg)
	runAll(t, r)
	if len(full.calls) != baseCfg.Epochs || full.calls[0] != 0 || full.calls[3] != 3 {
		t.Fatalf("SetEpoch calls %v, want 0..%d", full.calls, baseCfg.Epochs-1)
	}
	want := weights(m)

	part := &epochTextures{textures: textures{n: 40, fail: -1}}
	m2 := newModel(t, 3)
	r2, _ := NewRun(m2, part, baseCfg)
	for k := 0; k < 4; k++ { // into the second epoch of 3 batches
		r2.Step(context.Background())
	}
	state, _ := r2.Checkpoint()
	resumed := &epochTextures{textures: textures{n: 40, fail: -1}}
	m3 := newModel(t, 3)
	r3, err := Resume(m3, resumed, baseCfg, state)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, r3)
	if resumed.calls[0] != 1 {
		t.Fatalf("resumed run set epoch %v first, want 1", resumed.calls)
	}
	sameWeights(t, "resumed epoch-source run", want, weights(m3))
}
