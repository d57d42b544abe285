package scheduler

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/internal/aggregate"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/policy"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/spec"
)

// Campaign defaults, as documented on protocol.CampaignSpec.
const (
	DefaultFragmentSize = 256
	DefaultFragmentsMin = 4500
	DefaultFragmentsMax = 6000
	DefaultEpochs       = 2
	DefaultBatchSize    = 32
	DefaultLR           = 0.01
	DefaultMomentum     = 0.9
	DefaultQuorum       = 0.8
	DefaultWUsPerRound  = 4
	DefaultRounds       = 10
	DefaultWUDeadline   = 30 * time.Minute
	DefaultMaxAttempts  = 3
	DefaultMaxDeltaNorm = 1e3
	// Asynchronous mode and server optimiser defaults.
	DefaultBufferSize        = 3
	DefaultStalenessExponent = 0.5
	DefaultMaxStaleness      = 8
	DefaultServerLR          = 1.0
	DefaultServerLRAdam      = 0.01
	DefaultServerMomentum    = 0.9
	// MinQuorum and MaxQuorum bound the quorum fraction.
	MinQuorum = 0.75
	MaxQuorum = 0.90
)

var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Defaults fills zero fields of a campaign spec and checks the rest.
func Defaults(c *protocol.CampaignSpec) error {
	bad := func(format string, args ...any) error { return fail(protocol.CodeBadRequest, format, args...) }
	if c.Name == "" || len(c.Name) > 200 {
		return bad("name must be 1..200 characters")
	}
	if c.Dataset == "" {
		return bad("dataset is empty: name a dataset on the dataset-ftp server")
	}
	if c.Model == "" && len(c.ModelSpec) == 0 {
		return bad("model is empty: name a spec such as tcnn-small or give model_spec")
	}
	if c.Model != "" && len(c.ModelSpec) == 0 && !modelName.MatchString(c.Model) {
		return bad("model %q is not a spec name", c.Model)
	}
	setInt := func(p *int, def int) {
		if *p == 0 {
			*p = def
		}
	}
	setInt(&c.FragmentSize, DefaultFragmentSize)
	setInt(&c.FragmentsMin, DefaultFragmentsMin)
	setInt(&c.FragmentsMax, DefaultFragmentsMax)
	setInt(&c.Hyper.Epochs, DefaultEpochs)
	setInt(&c.Hyper.BatchSize, DefaultBatchSize)
	setInt(&c.WorkUnitsPerRound, DefaultWUsPerRound)
	setInt(&c.Rounds, DefaultRounds)
	setInt(&c.MaxAttempts, DefaultMaxAttempts)
	if c.Hyper.LearningRate == 0 {
		c.Hyper.LearningRate = DefaultLR
	}
	if c.Hyper.Momentum == 0 {
		c.Hyper.Momentum = DefaultMomentum
	}
	if c.Quorum == 0 {
		c.Quorum = DefaultQuorum
	}
	if c.WUDeadline == 0 {
		c.WUDeadline = protocol.Duration(DefaultWUDeadline)
	}
	if c.RoundDeadline == 0 {
		c.RoundDeadline = 4 * c.WUDeadline
	}
	if c.DeltaDType == "" {
		c.DeltaDType = "float32"
	}
	if c.MaxDeltaNorm == 0 {
		c.MaxDeltaNorm = DefaultMaxDeltaNorm
	}
	if c.Mode == "" {
		c.Mode = protocol.ModeSync
	}
	if c.Mode == protocol.ModeAsync {
		setInt(&c.BufferSize, DefaultBufferSize)
		setInt(&c.MaxStaleness, DefaultMaxStaleness)
		setInt(&c.EvalEvery, 1)
		if c.StalenessExponent == 0 {
			c.StalenessExponent = DefaultStalenessExponent
		}
	}
	if c.ServerOptimizer == "" {
		c.ServerOptimizer = protocol.OptimizerSGD
	}
	if c.ServerLR == 0 {
		c.ServerLR = DefaultServerLR
		if c.ServerOptimizer == protocol.OptimizerAdam {
			c.ServerLR = DefaultServerLRAdam
		}
	}
	if c.ServerMomentum == 0 && c.ServerOptimizer != protocol.OptimizerSGD {
		c.ServerMomentum = DefaultServerMomentum
	}
	switch {
	case c.FragmentSize < 8 || c.FragmentSize > 4096:
		return bad("fragment_size %d is outside 8..4096", c.FragmentSize)
	case c.FragmentsMin < 1 || c.FragmentsMax < c.FragmentsMin || c.FragmentsMax > 1_000_000:
		return bad("fragments_min %d and fragments_max %d must satisfy 1 <= min <= max <= 1000000", c.FragmentsMin, c.FragmentsMax)
	case c.Hyper.Epochs < 1 || c.Hyper.Epochs > 1000:
		return bad("hyper.epochs %d is outside 1..1000", c.Hyper.Epochs)
	case c.Hyper.BatchSize < 1 || c.Hyper.BatchSize > 65536:
		return bad("hyper.batch_size %d is outside 1..65536", c.Hyper.BatchSize)
	case !(c.Hyper.LearningRate > 0 && c.Hyper.LearningRate < 100):
		return bad("hyper.learning_rate %g must be in (0, 100)", c.Hyper.LearningRate)
	case !(c.Hyper.Momentum >= 0 && c.Hyper.Momentum < 1):
		return bad("hyper.momentum %g must be in [0, 1)", c.Hyper.Momentum)
	case !(c.Hyper.WeightDecay >= 0 && c.Hyper.WeightDecay < 1):
		return bad("hyper.weight_decay %g must be in [0, 1)", c.Hyper.WeightDecay)
	case !(c.Hyper.LRDecay >= 0 && c.Hyper.LRDecay <= 1):
		return bad("hyper.lr_decay %g must be in (0, 1]; leave it out (or 0) for a constant learning rate", c.Hyper.LRDecay)
	case !(c.Quorum >= MinQuorum-1e-9 && c.Quorum <= MaxQuorum+1e-9):
		return bad("quorum %g is outside %g..%g", c.Quorum, MinQuorum, MaxQuorum)
	case c.WorkUnitsPerRound < 1 || c.WorkUnitsPerRound > 100000:
		return bad("work_units_per_round %d is outside 1..100000", c.WorkUnitsPerRound)
	case c.Rounds < 1 || c.Rounds > 100000:
		return bad("rounds %d is outside 1..100000", c.Rounds)
	case time.Duration(c.WUDeadline) < time.Second:
		return bad("wu_deadline %v is under a second", time.Duration(c.WUDeadline))
	case c.RoundDeadline < c.WUDeadline:
		return bad("round_deadline %v is shorter than wu_deadline %v", time.Duration(c.RoundDeadline), time.Duration(c.WUDeadline))
	case c.MaxAttempts < 1 || c.MaxAttempts > 100:
		return bad("max_attempts %d is outside 1..100", c.MaxAttempts)
	case c.DeltaDType != "float32" && c.DeltaDType != "float16":
		return bad("delta_dtype %q: want float32 or float16", c.DeltaDType)
	case !(c.MaxDeltaNorm > 0) || math.IsInf(c.MaxDeltaNorm, 0):
		return bad("max_delta_norm %g must be positive and finite", c.MaxDeltaNorm)
	case c.Mode != protocol.ModeSync && c.Mode != protocol.ModeAsync:
		return bad("mode %q: want %q or %q", c.Mode, protocol.ModeSync, protocol.ModeAsync)
	case c.Mode == protocol.ModeSync && (c.BufferSize != 0 || c.StalenessExponent != 0 || c.MaxStaleness != 0 || c.EvalEvery != 0):
		return bad("buffer_size, staleness_exponent, max_staleness and eval_every belong to mode %q; this campaign is %q", protocol.ModeAsync, c.Mode)
	case c.Mode == protocol.ModeAsync && (c.BufferSize < 1 || c.BufferSize > 100000):
		return bad("buffer_size %d is outside 1..100000", c.BufferSize)
	case c.Mode == protocol.ModeAsync && (!(c.StalenessExponent > 0 && c.StalenessExponent <= 10)):
		return bad("staleness_exponent %g must be in (0, 10]", c.StalenessExponent)
	case c.Mode == protocol.ModeAsync && (c.MaxStaleness < 0 || c.MaxStaleness > 100000):
		return bad("max_staleness %d is outside 0..100000", c.MaxStaleness)
	case c.Mode == protocol.ModeAsync && (c.EvalEvery < 1 || c.EvalEvery > 100000):
		return bad("eval_every %d is outside 1..100000", c.EvalEvery)
	case c.ServerOptimizer != protocol.OptimizerSGD && c.ServerOptimizer != protocol.OptimizerMomentum && c.ServerOptimizer != protocol.OptimizerAdam:
		return bad("server_optimizer %q: want %q, %q or %q", c.ServerOptimizer, protocol.OptimizerSGD, protocol.OptimizerMomentum, protocol.OptimizerAdam)
	case !(c.ServerLR > 0 && c.ServerLR <= 100):
		return bad("server_lr %g must be in (0, 100]", c.ServerLR)
	case !(c.ServerMomentum >= 0 && c.ServerMomentum < 1):
		return bad("server_momentum %g must be in [0, 1)", c.ServerMomentum)
	case c.ServerOptimizer == protocol.OptimizerSGD && c.ServerMomentum != 0:
		return bad("server_momentum %g needs server_optimizer %q or %q", c.ServerMomentum, protocol.OptimizerMomentum, protocol.OptimizerAdam)
	case c.Mode == protocol.ModeAsync && c.MaxResultsPerAccount != 0:
		return bad("max_results_per_account bounds the rounds of mode %q; this campaign is %q", protocol.ModeSync, c.Mode)
	case c.MaxResultsPerAccount < 0 || c.MaxResultsPerAccount > c.WorkUnitsPerRound:
		return bad("max_results_per_account %d is outside 0..work_units_per_round (%d); 0 means no bound", c.MaxResultsPerAccount, c.WorkUnitsPerRound)
	}
	// The trainer steps in float32: a decay that takes the last round's rate below the
	// smallest normal float32 would train that round with a rate of (nearly) zero.
	if last := RoundLearningRate(c.Hyper, c.Rounds-1); last < minLR {
		return bad("hyper.lr_decay %g takes the learning rate of round %d to %g, below %g: use a decay closer to 1 or fewer rounds",
			c.Hyper.LRDecay, c.Rounds-1, last, minLR)
	}
	if c.Seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("campaign seed: %w", err)
		}
		c.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	return nil
}

// minLR is the smallest learning rate a round may get from LRDecay: the smallest
// normal float32, the trainer's precision.
const minLR = 0x1p-126

// RoundLearningRate is the learning rate of a campaign's round r (rounds count from 0):
// h.LearningRate x h.LRDecay^r, or h.LearningRate when LRDecay is 0 or 1. The server
// computes it once per work unit; clients train with the work unit's LearningRate.
func RoundLearningRate(h protocol.Hyper, round int) float64 {
	if h.LRDecay == 0 || h.LRDecay == 1 || round <= 0 {
		return h.LearningRate
	}
	return h.LearningRate * math.Pow(h.LRDecay, float64(round))
}

// Needed is the quorum count: ceil(quorum x wus), at least 1 (policy.Needed).
func Needed(quorum float64, wus int) int { return policy.Needed(quorum, wus) }

// campaignInfo is what the hot paths need about a campaign, parsed once.
type campaignInfo struct {
	spec      protocol.CampaignSpec
	modelSpec []byte
	resolved  *spec.Resolved
	classes   []string
	dtype     string // header dtype of deltas
	deltaMax  int64  // largest acceptable delta upload in bytes
	mode      policy.Mode
	agg       aggregate.Aggregator
	opt       aggregate.Optimizer
}

func (s *Scheduler) info(c *store.Campaign) (*campaignInfo, error) {
	s.specMu.Lock()
	ci := s.specs[c.ID]
	s.specMu.Unlock()
	if ci != nil {
		return ci, nil
	}
	ci = &campaignInfo{modelSpec: []byte(c.ModelSpec)}
	if err := json.Unmarshal([]byte(c.SpecJSON), &ci.spec); err != nil {
		return nil, fmt.Errorf("campaign %d spec: %w", c.ID, err)
	}
	if err := json.Unmarshal([]byte(c.ClassesJSON), &ci.classes); err != nil {
		return nil, fmt.Errorf("campaign %d classes: %w", c.ID, err)
	}
	sp, err := spec.Parse(ci.modelSpec)
	if err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	if ci.resolved, err = sp.Resolve(len(ci.classes), ci.spec.FragmentSize); err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	if ci.dtype, err = weights.DTypeOf(ci.spec.DeltaDType); err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	ci.deltaMax = weights.FileSize(ci.resolved.Params, ci.dtype, nil) + weights.MaxHeaderBytes
	if ci.mode, err = policy.For(&ci.spec); err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	aggName := aggregate.NameMean
	if ci.spec.WeightBySamples {
		aggName = aggregate.NameSampleWeight
	}
	if ci.agg, err = aggregate.For(aggName); err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	// Campaigns created before server optimisers existed average plainly.
	if ci.spec.ServerLR == 0 {
		ci.spec.ServerLR = DefaultServerLR
	}
	if ci.opt, err = aggregate.NewOptimizer(ci.spec.ServerOptimizer, ci.spec.ServerLR, ci.spec.ServerMomentum); err != nil {
		return nil, fmt.Errorf("campaign %d: %w", c.ID, err)
	}
	s.specMu.Lock()
	s.specs[c.ID] = ci
	s.specMu.Unlock()
	return ci, nil
}

// infoByID returns a campaign's parsed spec, reading the campaign only on a cache miss.
func (s *Scheduler) infoByID(ctx context.Context, id int64) (*campaignInfo, error) {
	s.specMu.Lock()
	ci := s.specs[id]
	s.specMu.Unlock()
	if ci != nil {
		return ci, nil
	}
	c, err := s.getCampaign(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.info(c)
}

// namedModelSpec reads a model spec by name: from the models directory when one is
// configured and holds it, else from the specs shipped in the binary (configs/models).
func (s *Scheduler) namedModelSpec(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil, fail(protocol.CodeBadRequest, "model %q is not a spec name such as \"tcnn-small\"", name)
	}
	if s.cfg.ModelsDir != "" {
		b, err := os.ReadFile(filepath.Join(s.cfg.ModelsDir, name+".json"))
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
	}
	b, err := configs.Model(name)
	if err != nil {
		return nil, fail(protocol.CodeNotFound, "model %q is neither in the models directory nor shipped (shipped: %s)",
			name, strings.Join(configs.ModelNames(), ", "))
	}
	return b, nil
}

func (s *Scheduler) loadModelSpec(c *protocol.CampaignSpec) (*spec.Spec, error) {
	if len(c.ModelSpec) > 0 {
		sp, err := spec.Parse(c.ModelSpec)
		if err != nil {
			return nil, fail(protocol.CodeBadRequest, "model_spec: %v", err)
		}
		return sp, nil
	}
	b, err := s.namedModelSpec(c.Model)
	if err != nil {
		return nil, err
	}
	sp, err := spec.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", c.Model, err)
	}
	return sp, nil
}

// CreateCampaign checks a campaign spec against its dataset and model, writes W(0) and
// records the campaign (running at once when spec.Start).
func (s *Scheduler) CreateCampaign(ctx context.Context, researcherID int64, cs protocol.CampaignSpec) (*protocol.Campaign, error) {
	if err := Defaults(&cs); err != nil {
		return nil, err
	}
	if s.data == nil {
		return nil, fail(protocol.CodeConflict, "the server has no dataset source configured")
	}
	m, err := s.data.Manifest(ctx, cs.Dataset, cs.ManifestVersion)
	if errors.Is(err, datasets.ErrNotFound) {
		return nil, fail(protocol.CodeNotFound, "%v", err)
	}
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	cs.ManifestVersion = m.Version
	if len(m.Classes) < 2 {
		return nil, fail(protocol.CodeBadRequest, "dataset %s has %d classes; need at least 2", cs.Dataset, len(m.Classes))
	}
	imgs, _ := data.Eligible(m.Refs(data.Train), cs.FragmentSize)
	if len(imgs) == 0 {
		return nil, fail(protocol.CodeBadRequest, "dataset %s has no training image of at least %dx%d pixels: use a smaller fragment_size", cs.Dataset, cs.FragmentSize, cs.FragmentSize)
	}
	sp, err := s.loadModelSpec(&cs)
	if err != nil {
		return nil, err
	}
	cs.Model = sp.Name
	cs.ModelSpec = nil
	resolved, err := sp.Resolve(len(m.Classes), cs.FragmentSize)
	if err != nil {
		return nil, fail(protocol.CodeBadRequest, "%v", err)
	}
	w0, err := s.cfg.Init(resolved, cs.Seed)
	if err != nil {
		return nil, fmt.Errorf("create campaign: initial weights: %w", err)
	}
	var buf bytes.Buffer
	if err := weights.Encode(&buf, w0, weights.F32, map[string]string{"model": sp.Name, "round": "0"}); err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	sha, err := s.blobs.Put(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	start := cs.Start
	cs.Start = false
	specJSON, _ := json.Marshal(cs)
	classes, _ := json.Marshal(m.Classes)
	now := s.now()
	c := store.Campaign{Name: cs.Name, ResearcherID: researcherID, SpecJSON: string(specJSON), ModelSpec: string(sp.JSON()),
		ClassesJSON: string(classes), ManifestVersion: m.Version, NumParams: int64(resolved.NumParams()),
		ForwardFLOPs: resolved.FLOPs, State: protocol.StateDraft, ModelSHA256: sha, CreatedAt: now, UpdatedAt: now}
	err = s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(&c).Error; err != nil {
			return err
		}
		if err := tx.Create(&store.ModelVersion{SHA256: sha, CampaignID: c.ID, Round: 0, Size: int64(buf.Len()), CreatedAt: now}).Error; err != nil {
			return err
		}
		if start {
			return s.startLocked(tx, &c, &cs)
		}
		return nil
	})
	s.campaignsChanged()
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	s.log.Info("campaign created", "campaign", c.ID, "name", c.Name, "dataset", cs.Dataset, "model", sp.Name,
		"params", resolved.NumParams(), "state", c.State)
	return s.Campaign(ctx, c.ID)
}

// startLocked moves a draft or paused campaign to running and opens its current round
// when it has none. It runs inside a transaction.
func (s *Scheduler) startLocked(tx *gorm.DB, c *store.Campaign, cs *protocol.CampaignSpec) error {
	now := s.now()
	var n int64
	if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", c.ID, c.Round).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		mode, err := policy.For(cs)
		if err != nil {
			return err
		}
		r := store.Round{CampaignID: c.ID, Round: c.Round, State: store.RoundOpen, BaseModel: c.ModelSHA256,
			Slots: mode.Slots(), Needed: mode.Needed(),
			OpenedAt: now, Deadline: now.Add(time.Duration(cs.RoundDeadline))}
		if err := tx.Create(&r).Error; err != nil {
			return err
		}
	} else if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ? AND state <> ?", c.ID, c.Round, store.RoundClosed).
		Update("deadline", now.Add(time.Duration(cs.RoundDeadline))).Error; err != nil {
		return err
	}
	c.State = protocol.StateRunning
	c.UpdatedAt = now
	return tx.Model(&store.Campaign{}).Where("id = ?", c.ID).Updates(map[string]any{"state": c.State, "updated_at": now}).Error
}

func (s *Scheduler) getCampaign(ctx context.Context, id int64) (*store.Campaign, error) {
	var c store.Campaign
	if err := s.read(ctx).Take(&c, id).Error; err != nil {
		if store.NotFound(err) == store.ErrNotFound {
			return nil, fail(protocol.CodeNotFound, "campaign %d does not exist", id)
		}
		return nil, fmt.Errorf("campaign %d: %w", id, err)
	}
	return &c, nil
}

func (s *Scheduler) toProtocol(c *store.Campaign) (*protocol.Campaign, error) {
	ci, err := s.info(c)
	if err != nil {
		return nil, err
	}
	return &protocol.Campaign{ID: c.ID, Spec: ci.spec, State: c.State, Round: c.Round, ModelSHA256: c.ModelSHA256,
		Classes: ci.classes, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Message: c.Message}, nil
}

// Campaign returns one campaign.
func (s *Scheduler) Campaign(ctx context.Context, id int64) (*protocol.Campaign, error) {
	c, err := s.getCampaign(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.toProtocol(c)
}

// Campaigns lists every campaign, oldest first.
func (s *Scheduler) Campaigns(ctx context.Context) ([]protocol.Campaign, error) {
	var cs []store.Campaign
	if err := s.read(ctx).Order("id").Find(&cs).Error; err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	out := make([]protocol.Campaign, 0, len(cs))
	for i := range cs {
		p, err := s.toProtocol(&cs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}

// Act applies start, pause, resume or stop to a campaign.
func (s *Scheduler) Act(ctx context.Context, id int64, action string) (*protocol.Campaign, error) {
	switch action {
	case protocol.ActionStart, protocol.ActionPause, protocol.ActionResume, protocol.ActionStop:
	default:
		return nil, fail(protocol.CodeNotFound, "unknown campaign action %q: want start, pause, resume or stop", action)
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var c store.Campaign
		if err := tx.Take(&c, id).Error; err != nil {
			if store.NotFound(err) == store.ErrNotFound {
				return fail(protocol.CodeNotFound, "campaign %d does not exist", id)
			}
			return err
		}
		ci, err := s.info(&c)
		if err != nil {
			return err
		}
		now := s.now()
		conflict := func() error {
			return fail(protocol.CodeConflict, "campaign %d is %s; cannot %s it", id, c.State, action)
		}
		switch action {
		case protocol.ActionStart, protocol.ActionResume:
			if c.State != protocol.StateDraft && c.State != protocol.StatePaused {
				return conflict()
			}
			if action == protocol.ActionResume && c.State != protocol.StatePaused {
				return conflict()
			}
			return s.startLocked(tx, &c, &ci.spec)
		case protocol.ActionPause:
			if c.State != protocol.StateRunning {
				return conflict()
			}
			return tx.Model(&store.Campaign{}).Where("id = ?", id).Updates(map[string]any{"state": protocol.StatePaused, "updated_at": now}).Error
		default: // stop
			if c.State == protocol.StateDone || c.State == protocol.StateStopped {
				return conflict()
			}
			if err := tx.Model(&store.WorkUnit{}).Where("campaign_id = ? AND state IN ?", id, []string{store.WUIssued, store.WUExpired}).
				Updates(map[string]any{"state": store.WUAborted, "finished_at": now}).Error; err != nil {
				return err
			}
			return tx.Model(&store.Campaign{}).Where("id = ?", id).Updates(map[string]any{"state": protocol.StateStopped, "updated_at": now}).Error
		}
	})
	s.campaignsChanged()
	if err != nil {
		if _, ok := err.(*Error); ok {
			return nil, err
		}
		return nil, fmt.Errorf("campaign %d %s: %w", id, action, err)
	}
	s.log.Info("campaign action", "campaign", id, "action", action)
	return s.Campaign(ctx, id)
}

// Rounds returns a campaign's rounds, oldest first, with their evaluations.
func (s *Scheduler) Rounds(ctx context.Context, id int64) ([]protocol.RoundInfo, error) {
	if _, err := s.getCampaign(ctx, id); err != nil {
		return nil, err
	}
	var rs []store.Round
	if err := s.read(ctx).Where("campaign_id = ?", id).Order("round").Find(&rs).Error; err != nil {
		return nil, fmt.Errorf("rounds of campaign %d: %w", id, err)
	}
	out := make([]protocol.RoundInfo, 0, len(rs))
	for _, r := range rs {
		ri := protocol.RoundInfo{Round: r.Round, State: r.State, BaseModel: r.BaseModel, ResultModel: r.ResultModel,
			Issued: r.Issued, Accepted: r.Accepted, Late: r.Late, Stale: r.Stale, Invalid: r.Invalid, Failed: r.Failed, Duplicates: r.Duplicates,
			OverLimit: r.OverLimit, Needed: r.Needed,
			OpenedAt: r.OpenedAt, ClosedAt: r.ClosedAt, SamplesTrained: r.SamplesTrained}
		if r.MetricsJSON != nil {
			var m protocol.Metrics
			if err := json.Unmarshal([]byte(*r.MetricsJSON), &m); err == nil {
				ri.Metrics = &m
			}
		}
		out = append(out, ri)
	}
	return out, nil
}
