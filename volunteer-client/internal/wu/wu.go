// Package wu runs a work unit with the real trainer: it reads the verified base model
// (trainer/safetensors), fetches the dataset manifest and the work unit's images into
// the verified cache (dataset-ftp/ftpstore), derives the fragments exactly as the
// server does (manifest.TrainFragments), and trains them with trainer/train, resuming
// bit-exactly from a checkpoint. It is the agent's production Trainer.
package wu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/texgrid/texgrid/dataset-ftp/ftpstore"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
	"github.com/texgrid/texgrid/trainer/train"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
)

// ErrCorruptImage means a cached image no longer matches its sha256 when it is read
// for training; the next Prepare re-verifies the cache and fetches it again.
var ErrCorruptImage = errors.New("cached image does not match its sha256")

// Trainer is the production agent.Trainer.
type Trainer struct {
	CacheDir string       // the image cache directory (shared by work units)
	Log      *slog.Logger // nil: discard
	// ImageCacheBytes bounds the decoded pixels a job holds in memory; 0 takes
	// agent.ImageCacheBytes, which the agent's memory estimate counts.
	ImageCacheBytes int64
}

var _ agent.Trainer = (*Trainer)(nil)

// DType maps a work unit's delta_dtype to the safetensors element type.
func DType(s string) safetensors.DType {
	if s == "float16" {
		return safetensors.F16
	}
	return safetensors.F32
}

// Prepare implements agent.Trainer.
func (t *Trainer) Prepare(ctx context.Context, w *protocol.WorkUnit, basePath string, threads int, maxCacheBytes int64, state []byte) (agent.Job, error) {
	log := t.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bad := func(err error) error { return fmt.Errorf("%w: %w", agent.ErrBadWorkUnit, err) }
	sp, err := spec.Parse(w.ModelSpec)
	if err != nil {
		return nil, bad(err)
	}
	r, err := sp.Resolve(len(w.Classes), w.FragmentSize)
	if err != nil {
		return nil, bad(err)
	}
	base, err := safetensors.ReadFile(basePath, safetensors.Options{Expect: r.Params, RequireFinite: true})
	if err != nil {
		os.Remove(basePath) // fetched again on the next try
		return nil, fmt.Errorf("base model: %w", err)
	}

	ds := w.Dataset
	var tlsCfg *tls.Config
	if ds.FTPTLS {
		host, _, _ := net.SplitHostPort(ds.FTPAddr)
		tlsCfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	store, err := ftpstore.Open(ctx, ftpstore.Config{
		Addr: ds.FTPAddr, User: ds.FTPUser, Password: ds.FTPPassword, TLS: tlsCfg,
		CacheDir: t.CacheDir, MaxCacheBytes: maxCacheBytes, Log: log,
	})
	if err != nil {
		return nil, ftpErr("open dataset store", err)
	}
	defer store.Close() // the FTP session; pinned cache files stay until the job closes
	var m *manifest.Manifest
	if ds.ManifestVersion != "" {
		m, err = store.FetchManifestVersion(ctx, ds.Name, ds.ManifestVersion)
	} else {
		m, err = store.FetchManifest(ctx, ds.Name)
	}
	if err != nil {
		return nil, ftpErr("manifest", err)
	}
	if !equal(m.Classes, w.Classes) {
		return nil, bad(fmt.Errorf("dataset %s has classes %v, the work unit %v", ds.Name, m.Classes, w.Classes))
	}
	refs, frags, err := m.TrainFragments(w.Seed, w.FragmentCount, w.FragmentSize)
	if err != nil {
		return nil, bad(err)
	}
	byKey := map[string]manifest.Image{}
	var need []manifest.Image
	for _, f := range frags {
		key := refs[f.Image].Key
		if _, ok := byKey[key]; ok {
			continue
		}
		im, ok := m.ImageByPath(key)
		if !ok {
			return nil, bad(fmt.Errorf("manifest lost image %s", key))
		}
		byKey[key] = im
		need = append(need, im)
	}
	if err := store.Fetch(ctx, ds.Name, need); err != nil {
		return nil, ftpErr("images", err)
	}
	release := store.Pin(need)
	loader := func(key string) (*data.Gray, error) {
		im := byKey[key]
		b, err := os.ReadFile(store.Path(im.SHA256))
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != im.SHA256 {
			return nil, fmt.Errorf("%s: %w", key, ErrCorruptImage)
		}
		return data.DecodeGray(bytes.NewReader(b))
	}
	pixels := t.ImageCacheBytes
	if pixels <= 0 {
		pixels = agent.ImageCacheBytes
	}
	src, err := data.NewFragmentSource(refs, frags, loader, pixels)
	if err != nil {
		release()
		return nil, bad(err)
	}
	model, err := nn.New(r, w.Seed)
	if err != nil {
		release()
		return nil, bad(err)
	}
	if err := model.SetParams(base.Tensors); err != nil {
		release()
		return nil, bad(err)
	}
	cfg := train.Config{
		Epochs: w.Hyper.Epochs, BatchSize: w.Hyper.BatchSize, LR: w.Hyper.LearningRate,
		Momentum: w.Hyper.Momentum, WeightDecay: w.Hyper.WeightDecay, Seed: w.Seed, Threads: threads,
	}
	j := &job{wu: w, base: cloneParams(base.Tensors), release: release, model: model}
	if state != nil {
		var inner []byte
		if j.acc, inner, err = unwrap(state); err == nil {
			j.run, err = train.Resume(model, src, cfg, inner)
		}
		if err != nil {
			release()
			// A checkpoint that does not fit is dropped; the agent restarts the work unit.
			return nil, fmt.Errorf("%w: %w", agent.ErrBadCheckpoint, err)
		}
	} else if j.run, err = train.NewRun(model, src, cfg); err != nil {
		release()
		return nil, bad(err)
	}
	log.Debug("work unit prepared", "id", w.ID, "images", len(need), "fragments", len(frags), "resumed", state != nil)
	return j, nil
}

// ftpErr marks the dataset failures no retry fixes (missing dataset or image, refused
// login, a changed manifest, a cache too small) as a bad work unit or one that does
// not fit; the rest (network) stay retryable.
func ftpErr(what string, err error) error {
	switch {
	case errors.Is(err, ftpstore.ErrCacheFull):
		return fmt.Errorf("%s: %w: %w", what, agent.ErrDoesNotFit, err)
	case errors.Is(err, ftpstore.ErrNotFound), errors.Is(err, ftpstore.ErrLogin), errors.Is(err, ftpstore.ErrVersion):
		return fmt.Errorf("%s: %w: %w", what, agent.ErrBadWorkUnit, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cloneParams(ps []tensor.Named) []tensor.Named {
	out := make([]tensor.Named, len(ps))
	for i, p := range ps {
		out[i] = tensor.Named{Name: p.Name, T: p.T.Clone()}
	}
	return out
}

// lossAcc is the last epoch's loss so far; it is part of the checkpoint so a resumed
// work unit reports the same loss as an uninterrupted one.
type lossAcc struct {
	Epoch   int     `json:"epoch"`
	Sum     float64 `json:"sum"` // sum of batch mean loss x batch samples
	N       int     `json:"n"`
	Samples int     `json:"samples"` // samples trained in the whole work unit
}

// job is one work unit's training run.
type job struct {
	wu      *protocol.WorkUnit
	base    []tensor.Named
	model   *nn.Model
	run     *train.Run
	release func()
	acc     lossAcc
}

// Step trains one batch and keeps the last epoch's loss for the result.
func (j *job) Step(ctx context.Context) (agent.StepInfo, error) {
	info, err := j.run.Step(ctx)
	if err != nil {
		return agent.StepInfo{}, err
	}
	if info.Samples > 0 {
		if info.Epoch != j.acc.Epoch {
			j.acc = lossAcc{Epoch: info.Epoch, Samples: j.acc.Samples}
		}
		j.acc.Sum += info.Loss * float64(info.Samples)
		j.acc.N += info.Samples
		j.acc.Samples += info.Samples
	}
	return agent.StepInfo{Epoch: info.Epoch, Batch: info.Batch, Loss: info.Loss, Samples: j.acc.Samples, Done: info.Done || j.run.Done()}, nil
}

// Progress is the trained share of the work unit.
func (j *job) Progress() float64 { return j.run.Progress() }

var wrapMagic = []byte("TXGWU01\n")

// Checkpoint wraps the trainer's state with the loss accumulator.
func (j *job) Checkpoint() ([]byte, error) {
	inner, err := j.run.Checkpoint()
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(j.acc)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(wrapMagic)+4+len(hdr)+len(inner))
	out = append(out, wrapMagic...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(hdr)))
	out = append(out, hdr...)
	return append(out, inner...), nil
}

func unwrap(b []byte) (lossAcc, []byte, error) {
	var acc lossAcc
	if len(b) < len(wrapMagic)+4 || !bytes.Equal(b[:len(wrapMagic)], wrapMagic) {
		return acc, nil, errors.New("not a work unit checkpoint")
	}
	b = b[len(wrapMagic):]
	n := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if n > len(b) {
		return acc, nil, errors.New("truncated work unit checkpoint")
	}
	if err := json.Unmarshal(b[:n], &acc); err != nil {
		return acc, nil, fmt.Errorf("work unit checkpoint: %w", err)
	}
	return acc, b[n:], nil
}

// Result returns W_trained - W_base in the work unit's dtype. Float16 rounding of
// tiny deltas is what the campaign chose when it allowed float16. A delta with a NaN
// or an infinity in that dtype (weights that blew up, or values past float16's range)
// is an error matching agent.ErrDiverged: the server would refuse it.
func (j *job) Result() ([]byte, int, float64, error) {
	if !j.run.Done() {
		return nil, 0, 0, errors.New("training is not finished")
	}
	cur := j.model.Params()
	delta := make([]tensor.Named, len(cur))
	for i, p := range cur {
		b := j.base[i]
		if b.Name != p.Name {
			return nil, 0, 0, fmt.Errorf("parameter %d is %s in the model, %s in the base", i, p.Name, b.Name)
		}
		d := tensor.New(p.T.Shape...)
		for k := range d.Data {
			d.Data[k] = p.T.Data[k] - b.T.Data[k]
		}
		delta[i] = tensor.Named{Name: p.Name, T: d}
	}
	meta := map[string]string{
		"work_unit":  strconv.FormatInt(j.wu.ID, 10),
		"base_model": j.wu.BaseModel.SHA256,
		"samples":    strconv.Itoa(j.acc.Samples),
	}
	b, err := safetensors.Marshal(delta, DType(j.wu.DeltaDType), meta)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("encode delta: %w", err)
	}
	if _, err := safetensors.Decode(b, safetensors.Options{RequireFinite: true}); errors.Is(err, safetensors.ErrNonFinite) {
		return nil, 0, 0, fmt.Errorf("%w: the delta: %w", agent.ErrDiverged, err)
	} else if err != nil {
		return nil, 0, 0, fmt.Errorf("check delta: %w", err)
	}
	loss := 0.0
	if j.acc.N > 0 {
		loss = j.acc.Sum / float64(j.acc.N)
	}
	return b, j.acc.Samples, loss, nil
}

// Close unpins the work unit's images in the cache.
func (j *job) Close() {
	if j.release != nil {
		j.release()
		j.release = nil
	}
}
