package nn

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

// shippedSpec loads configs/models/<name>.json from the module root.
func shippedSpec(b testing.TB, name string) *spec.Spec {
	b.Helper()
	s, err := spec.Load(filepath.Join(filepath.Dir(shippedSpecPath(b)), name+".json"))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// shippedSpecPath returns the path of configs/models/tcnn-small.json, found by walking
// up to the module root.
func shippedSpecPath(b testing.TB) string {
	b.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			b.Fatal("go.mod not found")
		}
		dir = parent
	}
	return filepath.Join(dir, "configs", "models", "tcnn-small.json")
}

func benchModel(b *testing.B, name string, threads int, train bool) {
	s := shippedSpec(b, name)
	r, err := s.Resolve(6, 256)
	if err != nil {
		b.Fatal(err)
	}
	m, _ := New(r, 1)
	const n = 32
	ws, _ := NewWorkspace(m, n, threads)
	rng := rand.New(rand.NewPCG(1, 1))
	copy(ws.Input(n), randSlice(rng, n*r.In[0].Size(), 0.3))
	labels := make([]int, n)
	for i := range labels {
		labels[i] = i % 6
	}
	step := func() {
		if train {
			ws.TrainBatch(n, labels, 1)
		} else {
			ws.Forward(n, false, 0)
		}
	}
	step()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkTrainSmall2(b *testing.B) { benchModel(b, "tcnn-small", 2, true) }
func BenchmarkInferSmall2(b *testing.B) { benchModel(b, "tcnn-small", 2, false) }
func BenchmarkTrainSmall1(b *testing.B) { benchModel(b, "tcnn-small", 1, true) }

func BenchmarkTrainTcnn3(b *testing.B) { benchModel(b, "tcnn3", 2, true) }

func BenchmarkInferTcnn3(b *testing.B) { benchModel(b, "tcnn3", 2, false) }
