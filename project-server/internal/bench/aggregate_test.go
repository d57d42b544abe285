package bench

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// tcnn3 resolves the reference network (6 classes, 256 px fragments): about 20 million
// parameters, an 80 MB float32 delta.
func tcnn3(b *testing.B) []spec.Param {
	sp, err := spec.Load(filepath.Join("..", "..", "..", "configs", "models", "tcnn3.json"))
	if err != nil {
		b.Fatal(err)
	}
	r, err := sp.Resolve(6, 256)
	if err != nil {
		b.Fatal(err)
	}
	return r.Params
}

// aggFiles are delta files and a base model on disk, written once per benchmark binary.
type aggFiles struct {
	once   sync.Once
	dir    string
	params []spec.Param
	deltas []string
	base   string
	size   int64 // bytes of one file
}

var agg aggFiles

// aggDeltas is how many distinct delta files the aggregation benchmarks fold.
const aggDeltas = 3

func (a *aggFiles) setup(b *testing.B) *aggFiles {
	a.once.Do(func() {
		a.params = tcnn3(b)
		dir, err := os.MkdirTemp("", "texgrid-aggbench-")
		if err != nil {
			b.Fatal(err)
		}
		a.dir = dir
		write := func(name string, seed uint64) string {
			rng := rand.New(rand.NewPCG(seed, 5))
			ts := make([]tensor.Named, len(a.params))
			for i, p := range a.params {
				t := tensor.New(p.Shape...)
				for j := range t.Data {
					t.Data[j] = float32(rng.NormFloat64()) * 1e-3
				}
				ts[i] = tensor.Named{Name: p.Name, T: t}
			}
			p := filepath.Join(dir, name)
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			if err := weights.Encode(f, ts, weights.F32, nil); err != nil {
				b.Fatal(err)
			}
			st, _ := f.Stat()
			a.size = st.Size()
			f.Close()
			return p
		}
		a.base = write("base", 0)
		for k := 0; k < aggDeltas; k++ {
			a.deltas = append(a.deltas, write("delta"+string(rune('a'+k)), uint64(k+1)))
		}
	})
	if a.dir == "" {
		b.Fatal("aggregation fixtures failed")
	}
	return a
}

// heapPeak samples the live heap every millisecond until stopped; peak is in bytes.
type heapPeak struct {
	stop chan struct{}
	done chan struct{}
	peak uint64
}

func watchHeap() *heapPeak {
	runtime.GC()
	h := &heapPeak{stop: make(chan struct{}), done: make(chan struct{})}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(h.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			h.peak = max(h.peak, s[0].Value.Uint64())
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) Stop() uint64 { close(h.stop); <-h.done; return h.peak }

// BenchmarkFold: decode and fold one tcnn3 float32 delta (80 MB) from its file into the
// running float64 sum, as a round close does for each accepted result.
func BenchmarkFold(b *testing.B) {
	a := agg.setup(b)
	sum := weights.NewSum(a.params)
	b.SetBytes(a.size)
	hp := watchHeap()
	b.ResetTimer()
	cpu := cpuTime()
	for i := 0; i < b.N; i++ {
		f, err := os.Open(a.deltas[i%len(a.deltas)])
		if err != nil {
			b.Fatal(err)
		}
		if err := sum.Add(f, weights.F32, 1); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	cpu = cpuTime() - cpu
	b.StopTimer()
	reportCPURate(b, cpu, a.size*int64(b.N))
	b.ReportMetric(float64(hp.Stop())/float64(a.size), "peak-heap/model")
}

// reportCPURate reports bytes per second of CPU time (user + system, the whole
// process): on a machine whose cores other work shares, a steadier figure than the
// wall-clock MB/s, which counts the time the benchmark waited for a core.
func reportCPURate(b *testing.B, cpu time.Duration, bytes int64) {
	if cpu > 0 {
		b.ReportMetric(float64(bytes)/1e6/cpu.Seconds(), "cpu-MB/s")
	}
}

// BenchmarkFoldBatch: fold aggDeltas tcnn3 float32 deltas from their files into the
// running sum in one pass (Sum.AddAll), as a round close does with its accepted
// results, up to weights.MaxBatch at a time. Throughput is delta bytes per second.
func BenchmarkFoldBatch(b *testing.B) {
	a := agg.setup(b)
	sum := weights.NewSum(a.params)
	b.SetBytes(a.size * int64(len(a.deltas)))
	ws := make([]float64, len(a.deltas))
	for i := range ws {
		ws[i] = 1
	}
	hp := watchHeap()
	b.ResetTimer()
	cpu := cpuTime()
	for i := 0; i < b.N; i++ {
		if err := foldFiles(sum, a.deltas, ws); err != nil {
			b.Fatal(err)
		}
	}
	cpu = cpuTime() - cpu
	b.StopTimer()
	reportCPURate(b, cpu, a.size*int64(len(a.deltas))*int64(b.N))
	b.ReportMetric(float64(hp.Stop())/float64(a.size), "peak-heap/model")
}

// foldFiles opens the delta files and folds them in one AddAll.
func foldFiles(sum *weights.Sum, paths []string, ws []float64) error {
	rs := make([]io.Reader, len(paths))
	for k, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rs[k] = f
	}
	return sum.AddAll(rs, weights.F32, ws)
}

// BenchmarkCloseRound: a whole round close over aggDeltas tcnn3 deltas: fold them from
// their files in one batch, then stream W + sum/n to a new model file. Throughput is delta bytes per
// second; peak-heap/model is the highest live heap over one model's size.
func BenchmarkCloseRound(b *testing.B) {
	a := agg.setup(b)
	b.SetBytes(a.size * int64(len(a.deltas)))
	out := filepath.Join(a.dir, "out")
	ws := make([]float64, len(a.deltas))
	for i := range ws {
		ws[i] = 1
	}
	hp := watchHeap()
	var storage []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sum := weights.NewSumIn(a.params, storage)
		storage = sum.Storage()
		if err := foldFiles(sum, a.deltas, ws); err != nil {
			b.Fatal(err)
		}
		base, err := os.Open(a.base)
		if err != nil {
			b.Fatal(err)
		}
		o, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		if err := sum.Apply(o, base, nil); err != nil {
			b.Fatal(err)
		}
		o.Close()
		base.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64(hp.Stop())/float64(a.size), "peak-heap/model")
}

// BenchmarkCheckUpload: what an upload costs before it is recorded: parse the header,
// check names and shapes, check every value is finite, compute the L2 norm and the
// sha256 of the body, from an in-memory body.
func BenchmarkCheckUpload(b *testing.B) {
	a := agg.setup(b)
	body, err := os.ReadFile(a.deltas[0])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h := sha256.New()
		if _, err := weights.Check(io.TeeReader(bytes.NewReader(body), h), a.params, weights.F32, 1e9); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBareSum is the peer: sum[i] += delta[i] over float32 slices already in
// memory, one core, no decoding, no validation, no file.
func BenchmarkBareSum(b *testing.B) {
	a := agg.setup(b)
	n := 0
	for _, p := range a.params {
		n += p.Size()
	}
	sum := make([]float32, n)
	delta := make([]float32, n)
	for i := range delta {
		delta[i] = float32(i%7) * 1e-3
	}
	b.SetBytes(int64(4 * n))
	b.ResetTimer()
	cpu := cpuTime()
	for i := 0; i < b.N; i++ {
		for j, v := range delta {
			sum[j] += v
		}
	}
	reportCPURate(b, cpuTime()-cpu, int64(4*n)*int64(b.N))
}

// BenchmarkCheck is BenchmarkCheckUpload without the sha256: header, names, shapes,
// finiteness and norm only.
func BenchmarkCheck(b *testing.B) {
	a := agg.setup(b)
	body, err := os.ReadFile(a.deltas[0])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := weights.Check(bytes.NewReader(body), a.params, weights.F32, 1e9); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256 is the peer of the upload's integrity hash.
func BenchmarkSHA256(b *testing.B) {
	buf := make([]byte, 8<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		sha256.Sum256(buf)
	}
}
