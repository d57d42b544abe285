package wu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
	"github.com/texgrid/texgrid/trainer/train"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/testgrid"
	"github.com/texgrid/texgrid/volunteer-client/internal/wu"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testgrid.Cleanup()
	os.Exit(code)
}

// fixture is a real dataset-ftp server holding a small kth-tips-grey subset, and a
// work unit over it with a fresh base model on disk.
type fixture struct {
	ftp    *testgrid.FTP
	local  string // the uploaded folder
	m      *manifest.Manifest
	wu     *protocol.WorkUnit
	base   string
	params []tensor.Named
	r      *spec.Resolved
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	src := shareddata.Path(t, "kth-tips-grey")
	f := &fixture{ftp: testgrid.StartFTP(t)}
	f.local = testgrid.Subset(t, src, "kth3", 3, 6)
	f.m = f.ftp.Upload(t, f.local)
	sp, err := configs.Model("tcnn-small")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse(sp)
	if err != nil {
		t.Fatal(err)
	}
	if f.r, err = s.Resolve(len(f.m.Classes), 64); err != nil {
		t.Fatal(err)
	}
	model, err := nn.New(f.r, 99)
	if err != nil {
		t.Fatal(err)
	}
	f.params = model.Params()
	b, err := safetensors.Marshal(f.params, safetensors.F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.base = filepath.Join(t.TempDir(), "base.safetensors")
	if err := os.WriteFile(f.base, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f.wu = &protocol.WorkUnit{
		ID: 5, CampaignID: 1, Round: 0, ModelSpec: s.JSON(), Classes: f.m.Classes,
		BaseModel:    protocol.BlobRef{SHA256: "00"},
		Dataset:      protocol.DatasetRef{Name: "kth3", ManifestVersion: f.m.Version, FTPAddr: f.ftp.Addr, FTPUser: "anonymous", FTPPassword: "volunteer@"},
		FragmentSize: 64, FragmentCount: 40, Seed: 1234,
		Hyper:      protocol.Hyper{Epochs: 2, BatchSize: 8, LearningRate: 0.01, Momentum: 0.9, WeightDecay: 1e-4},
		DeltaDType: "float32",
	}
	return f
}

// base128 writes a base model for 128-pixel fragments.
func (f *fixture) base128(t *testing.T) string {
	t.Helper()
	r, err := f.r.Spec.Resolve(len(f.m.Classes), 128)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.New(r, 3)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "base128.safetensors")
	b, err := safetensors.Marshal(m.Params(), safetensors.F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) trainer(t *testing.T) *wu.Trainer {
	return &wu.Trainer{CacheDir: filepath.Join(t.TempDir(), "cache")}
}

// finish steps a job to its end and returns its result.
func finish(t *testing.T, j agent.Job) ([]byte, int, float64) {
	t.Helper()
	for {
		info, err := j.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.Done {
			break
		}
	}
	d, n, loss, err := j.Result()
	if err != nil {
		t.Fatal(err)
	}
	return d, n, loss
}

// direct trains the same work unit straight from the local image files with the
// trainer packages, as a reference independent of the FTP path and the cache.
func (f *fixture) direct(t *testing.T, threads int) []tensor.Named {
	t.Helper()
	refs, frags, err := f.m.TrainFragments(f.wu.Seed, f.wu.FragmentCount, f.wu.FragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	grays := make([]*data.Gray, len(refs))
	for i, r := range refs {
		if grays[i], err = data.LoadGray(filepath.Join(f.local, filepath.FromSlash(r.Key))); err != nil {
			t.Fatal(err)
		}
	}
	src, err := data.NewMemorySource(refs, grays, frags)
	if err != nil {
		t.Fatal(err)
	}
	m, err := nn.New(f.r, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetParams(f.params); err != nil {
		t.Fatal(err)
	}
	h := f.wu.Hyper
	run, err := train.NewRun(m, src, train.Config{Epochs: h.Epochs, BatchSize: h.BatchSize, LR: h.LearningRate, Momentum: h.Momentum, WeightDecay: h.WeightDecay, Seed: f.wu.Seed, Threads: threads})
	if err != nil {
		t.Fatal(err)
	}
	for !run.Done() {
		if _, err := run.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]tensor.Named, len(f.params))
	for i, p := range m.Params() {
		d := tensor.New(p.T.Shape...)
		for k := range d.Data {
			d.Data[k] = p.T.Data[k] - f.params[i].T.Data[k]
		}
		out[i] = tensor.Named{Name: p.Name, T: d}
	}
	return out
}

func decode(t *testing.T, b []byte, f *fixture) *safetensors.File {
	t.Helper()
	file, err := safetensors.Decode(b, safetensors.Options{Expect: f.r.Params, RequireFinite: true})
	if err != nil {
		t.Fatal(err)
	}
	return file
}

func sameTensors(a, b []tensor.Named) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || len(a[i].T.Data) != len(b[i].T.Data) {
			return false
		}
		for k := range a[i].T.Data {
			if a[i].T.Data[k] != b[i].T.Data[k] {
				return false
			}
		}
	}
	return true
}

// TestWorkUnitOverRealFTP trains a work unit whose images come from a real dataset-ftp
// server and checks the delta against direct training on the same files, the resume
// from a checkpoint taken half-way (bit-exact), the float16 encoding, a damaged cache
// file, and a cache too small for the images. One server serves every case.
func TestWorkUnitOverRealFTP(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tr := f.trainer(t)
	const threads = 2

	j, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, samples, loss := finish(t, j)
	j.Close()
	if samples != f.wu.FragmentCount*f.wu.Hyper.Epochs || !(loss > 0) {
		t.Fatalf("samples %d loss %g; want %d samples and a positive loss", samples, loss, f.wu.FragmentCount*f.wu.Hyper.Epochs)
	}

	t.Run("equals direct training", func(t *testing.T) {
		got := decode(t, want, f)
		if got.DType != safetensors.F32 {
			t.Errorf("dtype %s, want F32", got.DType)
		}
		if !sameTensors(got.Tensors, f.direct(t, threads)) {
			t.Error("the work unit's delta differs from training the same fragments directly")
		}
		if got.Meta["work_unit"] != "5" {
			t.Errorf("metadata %v", got.Meta)
		}
	})

	t.Run("resume from checkpoint is bit-exact", func(t *testing.T) {
		for _, stop := range []int{1, 4, 7} {
			j, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < stop; i++ {
				if _, err := j.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			st, err := j.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			j.Step(ctx) // work after the checkpoint is lost with the process
			j.Close()
			j2, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, st)
			if err != nil {
				t.Fatal(err)
			}
			got, n, l := finish(t, j2)
			j2.Close()
			if string(got) != string(want) || n != samples || l != loss {
				t.Errorf("resumed after %d batches: delta equal %v, samples %d/%d, loss %g/%g", stop, string(got) == string(want), n, samples, l, loss)
			}
		}
	})

	t.Run("float16 delta", func(t *testing.T) {
		w16 := *f.wu
		w16.DeltaDType = "float16"
		j, err := tr.Prepare(ctx, &w16, f.base, threads, 64<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := finish(t, j)
		j.Close()
		file := decode(t, b, f)
		if file.DType != safetensors.F16 || len(b) >= len(want)*3/4 {
			t.Errorf("dtype %s, %d bytes (float32: %d): want F16 at about half the size", file.DType, len(b), len(want))
		}
	})

	t.Run("damaged cache file is fetched again", func(t *testing.T) {
		ents, _ := filepath.Glob(filepath.Join(tr.CacheDir, "??", "*"))
		if len(ents) == 0 {
			t.Fatal("nothing in the image cache")
		}
		for _, e := range ents {
			if err := os.WriteFile(e, []byte("not the image"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		j, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, _ := finish(t, j)
		j.Close()
		if string(got) != string(want) {
			t.Error("delta after re-fetching damaged cache files differs")
		}
	})

	t.Run("file damaged after the fetch fails the step", func(t *testing.T) {
		j, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		ents, _ := filepath.Glob(filepath.Join(tr.CacheDir, "??", "*"))
		for _, e := range ents {
			os.WriteFile(e, []byte("damaged"), 0o600)
		}
		var stepErr error
		for i := 0; i < 20 && stepErr == nil; i++ {
			var info agent.StepInfo
			info, stepErr = j.Step(ctx)
			if info.Done {
				break
			}
		}
		if !errors.Is(stepErr, wu.ErrCorruptImage) {
			t.Errorf("step over damaged files: %v, want ErrCorruptImage", stepErr)
		}
	})

	t.Run("cache too small does not fit", func(t *testing.T) {
		small := &wu.Trainer{CacheDir: filepath.Join(t.TempDir(), "cache")}
		_, err := small.Prepare(ctx, f.wu, f.base, threads, 10<<10, nil)
		if !errors.Is(err, agent.ErrDoesNotFit) {
			t.Errorf("Prepare with a 10 KB cache: %v, want ErrDoesNotFit", err)
		}
	})

	t.Run("bad work units", func(t *testing.T) {
		cases := []struct {
			name string
			mod  func(w *protocol.WorkUnit)
		}{
			{"unknown dataset", func(w *protocol.WorkUnit) { w.Dataset.Name = "nope" }},
			{"changed manifest", func(w *protocol.WorkUnit) { w.Dataset.ManifestVersion = "ff" }},
			{"wrong classes", func(w *protocol.WorkUnit) { w.Classes = []string{"x", "y", "z"} }},
			{"bad spec", func(w *protocol.WorkUnit) { w.ModelSpec = []byte(`{"name":"x"}`) }},
		}
		for _, c := range cases {
			w := *f.wu
			c.mod(&w)
			_, err := tr.Prepare(ctx, &w, f.base, threads, 64<<20, nil)
			if !errors.Is(err, agent.ErrBadWorkUnit) {
				t.Errorf("%s: %v, want ErrBadWorkUnit", c.name, err)
			}
		}
	})

	t.Run("memory estimate covers the real job", func(t *testing.T) {
		w := *f.wu
		w.FragmentSize, w.Hyper.BatchSize = 128, 16
		est, _, err := agent.Estimate(&w)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		j, err := tr.Prepare(ctx, &w, f.base128(t), threads, 64<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := j.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		j.Close()
		t.Logf("estimate %.1f MB, live heap of the prepared job after 2 batches %.1f MB", float64(est)/(1<<20), float64(used)/(1<<20))
		if used > est {
			t.Errorf("the job holds %d bytes, over its %d byte estimate", used, est)
		}
		if est > 20*used+agent.ImageCacheBytes+64<<20 {
			t.Errorf("estimate %d bytes is far above the %d the job holds", est, used)
		}
	})

	t.Run("bad checkpoint", func(t *testing.T) {
		_, err := tr.Prepare(ctx, f.wu, f.base, threads, 64<<20, []byte("garbage"))
		if !errors.Is(err, agent.ErrBadCheckpoint) {
			t.Errorf("Prepare from garbage state: %v, want ErrBadCheckpoint", err)
		}
	})
}

func TestBenchmark(t *testing.T) {
	t.Parallel()
	g, err := wu.Benchmark(context.Background(), 1, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !(g > 0.01) || g > 1e5 {
		t.Errorf("benchmark %g GFLOP/s is implausible", g)
	}
}
