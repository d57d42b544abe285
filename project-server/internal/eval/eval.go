// Package eval evaluates each round's new global model on the campaign's test split, in
// the background, and stores the metrics on the round. Rounds closed without metrics
// (because the server stopped first) are found again at start, so every closed round
// is eventually evaluated exactly as if nothing had happened. The Engine is the seam
// between this bookkeeping and the network code (the Go trainer, ONNX Runtime).
package eval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/blob"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Job is one model to evaluate.
type Job struct {
	CampaignID   int64
	Round        int
	ModelPath    string // F32 safetensors weights
	ModelSpec    []byte // canonical spec JSON
	Classes      []string
	FragmentSize int
	Dataset      string
	Manifest     *manifest.Manifest
	Images       datasets.Source
	Threads      int
}

// Engine computes a model's metrics on the test split of a job's manifest.
type Engine interface {
	Evaluate(ctx context.Context, job *Job) (*protocol.Metrics, error)
}

// Runner evaluates closed rounds one at a time in its own goroutine (Run).
type Runner struct {
	db      *store.DB
	blobs   *blob.Store
	src     datasets.Source
	engine  Engine
	threads int
	log     *slog.Logger
	wake    chan struct{}
}

// NewRunner returns a runner; with a nil engine or source it evaluates nothing.
func NewRunner(db *store.DB, blobs *blob.Store, src datasets.Source, engine Engine, threads int, log *slog.Logger) *Runner {
	return &Runner{db: db, blobs: blobs, src: src, engine: engine, threads: threads, log: log, wake: make(chan struct{}, 1)}
}

// Enqueue asks the runner to look for rounds to evaluate. It never blocks.
func (r *Runner) Enqueue(campaignID int64, round int) {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run evaluates pending rounds until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	if r.engine == nil || r.src == nil {
		r.log.Info("round evaluation disabled: no evaluation engine or dataset source")
		<-ctx.Done()
		return
	}
	for {
		for ctx.Err() == nil {
			did, err := r.next(ctx)
			if err != nil && ctx.Err() == nil {
				r.log.Error("evaluation", "err", err)
			}
			if !did {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
	}
}

// ErrNothing means no round is waiting for evaluation.
var ErrNothing = errors.New("no round to evaluate")

// next evaluates the oldest closed round without metrics; it reports whether it found one.
func (r *Runner) next(ctx context.Context) (bool, error) {
	var rd store.Round
	// A closed round without its result model is a close in progress: not yet.
	err := r.db.WithContext(ctx).Where("state = ? AND result_model <> '' AND metrics_json IS NULL AND eval_error = ''", store.RoundClosed).
		Order("campaign_id, round").Take(&rd).Error
	if err != nil {
		if errors.Is(store.NotFound(err), store.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("find round to evaluate: %w", err)
	}
	m, evalErr := r.evaluate(ctx, &rd)
	if ctx.Err() != nil {
		return false, nil
	}
	up := map[string]any{}
	if evalErr != nil {
		msg := evalErr.Error()
		if len(msg) > 1000 {
			msg = msg[:1000]
		}
		up["eval_error"] = msg
		r.log.Warn("round evaluation failed", "campaign", rd.CampaignID, "round", rd.Round, "err", evalErr)
	} else {
		b, _ := json.Marshal(m)
		up["metrics_json"] = string(b)
		r.log.Info("round evaluated", "campaign", rd.CampaignID, "round", rd.Round,
			"fragment_accuracy", m.FragmentAccuracy, "image_accuracy", m.ImageAccuracy, "engine", m.Engine)
	}
	if err := r.db.WithContext(ctx).Model(&store.Round{}).Where("campaign_id = ? AND round = ?", rd.CampaignID, rd.Round).
		Updates(up).Error; err != nil {
		return false, fmt.Errorf("store evaluation of round %d: %w", rd.Round, err)
	}
	return true, nil
}

func (r *Runner) evaluate(ctx context.Context, rd *store.Round) (*protocol.Metrics, error) {
	var c store.Campaign
	if err := r.db.WithContext(ctx).Take(&c, rd.CampaignID).Error; err != nil {
		return nil, fmt.Errorf("campaign %d: %w", rd.CampaignID, err)
	}
	var cs protocol.CampaignSpec
	if err := json.Unmarshal([]byte(c.SpecJSON), &cs); err != nil {
		return nil, fmt.Errorf("campaign %d spec: %w", c.ID, err)
	}
	var classes []string
	if err := json.Unmarshal([]byte(c.ClassesJSON), &classes); err != nil {
		return nil, fmt.Errorf("campaign %d classes: %w", c.ID, err)
	}
	m, err := r.src.Manifest(ctx, cs.Dataset, c.ManifestVersion)
	if err != nil {
		return nil, err
	}
	path, err := r.blobs.Path(rd.ResultModel)
	if err != nil {
		return nil, err
	}
	return r.engine.Evaluate(ctx, &Job{CampaignID: c.ID, Round: rd.Round, ModelPath: path, ModelSpec: []byte(c.ModelSpec),
		Classes: classes, FragmentSize: cs.FragmentSize, Dataset: cs.Dataset, Manifest: m, Images: r.src, Threads: r.threads})
}
