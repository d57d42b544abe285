package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/texgrid/texgrid/project-server/internal/blob"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// ResultMeta is what a result upload says about itself in its headers.
type ResultMeta struct {
	SHA256  string  // Texgrid-Sha256 of the body
	Samples int64   // Texgrid-Samples
	Loss    float64 // Texgrid-Loss
}

// CreditPerFLOP converts floating-point work into credit: one credit per GFLOP.
const CreditPerFLOP = 1e-9

// SubmitResult reads, validates and records a work unit's delta. It answers accepted
// (counted toward the quorum; the round closes when this result completes it), late
// (with ErrLate: the round had closed; recorded and credited, never merged), or a
// refusal that changed nothing, except invalid deltas which are recorded against the
// host. A replay of an accepted result gets the original answer with Replayed set.
func (s *Scheduler) SubmitResult(ctx context.Context, hostID, wuID int64, meta ResultMeta, contentLength int64, body io.Reader) (*protocol.ResultResponse, error) {
	if !blob.ValidName(meta.SHA256) {
		return nil, fail(protocol.CodeBadRequest, "header %s must be the body's sha256 in lowercase hex", protocol.HeaderSHA256)
	}
	if meta.Samples < 0 || meta.Samples > 1e12 || math.IsNaN(meta.Loss) || math.IsInf(meta.Loss, 0) {
		return nil, fail(protocol.CodeBadRequest, "header %s must be a non-negative integer and %s a finite number", protocol.HeaderSamples, protocol.HeaderLoss)
	}
	w, err := s.ownWU(s.db.WithContext(ctx), hostID, wuID)
	if err != nil {
		return nil, err
	}
	c, err := s.getCampaign(ctx, w.CampaignID)
	if err != nil {
		return nil, err
	}
	ci, err := s.info(c)
	if err != nil {
		return nil, err
	}
	if resp, err, done := s.replay(s.db.WithContext(ctx), w, meta.SHA256); done {
		return resp, err
	}
	if w.State == store.WUAborted || c.State == protocol.StateStopped {
		return nil, fail(protocol.CodeWUClosed, "work unit %d was aborted (host detached or campaign stopped); drop it", wuID)
	}
	if contentLength > ci.deltaMax {
		return nil, fail(protocol.CodeTooLarge, "the delta is %d bytes; this campaign's model takes at most %d", contentLength, ci.deltaMax)
	}

	bw, err := s.blobs.Create()
	if err != nil {
		return nil, err
	}
	defer bw.Abort()
	lr := &limitReader{r: body, n: ci.deltaMax}
	sum, err := weights.Check(io.TeeReader(lr, bw), ci.resolved.Params, ci.dtype, ci.spec.MaxDeltaNorm)
	switch {
	case lr.over:
		return nil, fail(protocol.CodeTooLarge, "the delta is over %d bytes, the most this campaign's model takes", ci.deltaMax)
	case errors.Is(err, weights.ErrTruncated):
		return nil, fail(protocol.CodeBadRequest, "the upload is truncated: %v", err)
	case errors.Is(err, weights.ErrInvalid):
		reason := err.Error()
		if rerr := s.recordInvalid(ctx, w, meta, bw.Size(), reason); rerr != nil {
			return nil, rerr
		}
		return nil, fail(protocol.CodeInvalidDelta, "%s", reason)
	case err != nil:
		if isTooLarge(err) {
			return nil, fail(protocol.CodeTooLarge, "the request body is over the size limit")
		}
		return nil, fail(protocol.CodeBadRequest, "reading the upload failed: %v", err)
	}
	if got := bw.Sum(); got != meta.SHA256 {
		return nil, fail(protocol.CodeBadRequest, "the body's sha256 is %s, not the %s in %s", got, meta.SHA256, protocol.HeaderSHA256)
	}
	sha, err := bw.Commit()
	if err != nil {
		return nil, err
	}
	return s.record(ctx, w, ci, meta, sha, bw.Size(), sum.Norm)
}

// replay answers a result for a work unit whose result was already recorded.
func (s *Scheduler) replay(db *gorm.DB, w *store.WorkUnit, sha string) (*protocol.ResultResponse, error, bool) {
	if w.State != store.WUAccepted && w.State != store.WULate {
		return nil, nil, false
	}
	var prev store.Result
	err := db.Where("work_unit_id = ? AND outcome IN ?", w.ID, []string{protocol.OutcomeAccepted, protocol.OutcomeLate}).Take(&prev).Error
	if err != nil {
		return nil, fmt.Errorf("replay of work unit %d: %w", w.ID, err), true
	}
	if prev.SHA256 != sha {
		return nil, fail(protocol.CodeConflict, "work unit %d already has a %s result with sha256 %s; a different one is refused", w.ID, prev.Outcome, prev.SHA256), true
	}
	resp := &protocol.ResultResponse{Outcome: prev.Outcome, Round: prev.Round, Credit: prev.Credit, Replayed: true}
	if prev.Outcome == protocol.OutcomeLate {
		return resp, lateError(w), true
	}
	return resp, nil, true
}

func lateError(w *store.WorkUnit) error {
	return fail(protocol.CodeLate, "round %d closed before the result of work unit %d arrived; it was recorded and credited, not merged", w.Round, w.ID)
}

func isTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// limitReader reads at most n bytes and notes whether the stream had more.
type limitReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		var one [1]byte
		k, err := l.r.Read(one[:])
		if k > 0 {
			l.over = true
			return 0, fmt.Errorf("body over the limit")
		}
		return 0, err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= int64(k)
	return k, err
}

func (s *Scheduler) recordInvalid(ctx context.Context, w *store.WorkUnit, meta ResultMeta, size int64, reason string) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Create(&store.Result{WorkUnitID: w.ID, HostID: w.HostID, CampaignID: w.CampaignID, Round: w.Round,
			SHA256: meta.SHA256, Size: size, Outcome: store.OutcomeInvalid, Reason: reason, Samples: meta.Samples,
			Loss: meta.Loss, CreatedAt: s.now()}).Error; err != nil {
			return err
		}
		if err := tx.Model(&store.Host{}).Where("id = ?", w.HostID).
			Updates(map[string]any{"results_invalid": gorm.Expr("results_invalid + 1"), "last_contact": s.now()}).Error; err != nil {
			return err
		}
		return tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", w.CampaignID, w.Round).
			Update("invalid", gorm.Expr("invalid + 1")).Error
	})
	if err != nil {
		return fmt.Errorf("record invalid result of work unit %d: %w", w.ID, err)
	}
	s.cfg.Counters.Result(store.OutcomeInvalid)
	s.log.Warn("invalid result", "wu", w.ID, "host", w.HostID, "reason", reason)
	return nil
}

// closed describes a round close, for the work done after its commit.
type closed struct {
	campaignID int64
	round      int
	model      string
	deltas     []string
	done       bool
	took       time.Duration
}

// record commits a valid result whose blob is durable.
func (s *Scheduler) record(ctx context.Context, w0 *store.WorkUnit, ci *campaignInfo, meta ResultMeta, sha string, size int64, norm float64) (*protocol.ResultResponse, error) {
	var (
		resp   *protocol.ResultResponse
		outErr error
		cl     *closed
	)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		cl, resp, outErr = nil, nil, nil
		r, err := s.lockRound(tx, w0.CampaignID, w0.Round)
		if err != nil {
			return err
		}
		var w store.WorkUnit
		if err := tx.Take(&w, w0.ID).Error; err != nil {
			return err
		}
		if rr, rerr, done := s.replay(tx, &w, sha); done {
			if _, ok := rerr.(*Error); !ok && rerr != nil {
				return rerr
			}
			resp, outErr = rr, rerr
			return nil
		}
		var c store.Campaign
		if err := tx.Take(&c, w.CampaignID).Error; err != nil {
			return err
		}
		if w.State == store.WUAborted || c.State == protocol.StateStopped {
			outErr = fail(protocol.CodeWUClosed, "work unit %d was aborted (host detached or campaign stopped); drop it", w.ID)
			return nil
		}
		now := s.now()
		credit := float64(w.FLOPs) * CreditPerFLOP
		outcome := protocol.OutcomeAccepted
		if r.State == store.RoundClosed {
			outcome = protocol.OutcomeLate
		} else {
			var dup int64
			if err := tx.Model(&store.WorkUnit{}).Where("campaign_id = ? AND round = ? AND slot = ? AND state = ?",
				w.CampaignID, w.Round, w.Slot, store.WUAccepted).Count(&dup).Error; err != nil {
				return err
			}
			if dup > 0 {
				outcome = protocol.OutcomeLate // another issue of this slot was merged already
			}
		}
		res := store.Result{WorkUnitID: w.ID, HostID: w.HostID, CampaignID: w.CampaignID, Round: w.Round, SHA256: sha,
			Size: size, Outcome: outcome, Samples: meta.Samples, Loss: meta.Loss, Norm: norm, Credit: credit, CreatedAt: now}
		if err := tx.Create(&res).Error; err != nil {
			return err
		}
		if err := tx.Model(&store.WorkUnit{}).Where("id = ?", w.ID).
			Updates(map[string]any{"state": outcome, "finished_at": now, "progress": 1}).Error; err != nil {
			return err
		}
		if err := tx.Model(&store.Host{}).Where("id = ?", w.HostID).Updates(map[string]any{
			"results_valid": gorm.Expr("results_valid + 1"), "credit": gorm.Expr("credit + ?", credit), "last_contact": now}).Error; err != nil {
			return err
		}
		resp = &protocol.ResultResponse{Outcome: outcome, Round: w.Round, Credit: credit}
		if outcome == protocol.OutcomeLate {
			outErr = lateError(&w)
			return tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", w.CampaignID, w.Round).
				Update("late", gorm.Expr("late + 1")).Error
		}
		if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", w.CampaignID, w.Round).Updates(map[string]any{
			"accepted": gorm.Expr("accepted + 1"), "samples_trained": gorm.Expr("samples_trained + ?", meta.Samples)}).Error; err != nil {
			return err
		}
		if r.Accepted+1 >= r.Needed {
			r.Accepted++
			cl, err = s.closeRound(tx, &c, ci, r)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record result of work unit %d: %w", w0.ID, err)
	}
	if resp != nil && !resp.Replayed {
		s.cfg.Counters.Result(resp.Outcome)
	}
	if resp != nil && resp.Outcome == protocol.OutcomeLate && !resp.Replayed {
		s.gcBlobs(ctx, sha)
	}
	if cl != nil {
		s.afterClose(ctx, cl)
	}
	return resp, outErr
}

// closeRound folds the round's accepted deltas into W(r+1), stores it, closes round r
// and opens round r+1 (or finishes the campaign), all inside tx. The deltas are read
// from their blobs one at a time, so memory stays one running sum.
func (s *Scheduler) closeRound(tx *gorm.DB, c *store.Campaign, ci *campaignInfo, r *store.Round) (*closed, error) {
	start := time.Now()
	var rs []store.Result
	if err := tx.Select("sha256", "samples").Where("campaign_id = ? AND round = ? AND outcome = ?", c.ID, r.Round, protocol.OutcomeAccepted).
		Order("id").Find(&rs).Error; err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("close round %d of campaign %d: no accepted result", r.Round, c.ID)
	}
	sum := weights.NewSum(ci.resolved.Params)
	cl := &closed{campaignID: c.ID, round: r.Round}
	for _, res := range rs {
		weight := 1.0
		if ci.spec.WeightBySamples && res.Samples > 0 {
			weight = float64(res.Samples)
		}
		if err := s.foldBlob(sum, res.SHA256, ci.dtype, weight); err != nil {
			return nil, err
		}
		cl.deltas = append(cl.deltas, res.SHA256)
	}
	if !sum.Finite() {
		return nil, fmt.Errorf("close round %d of campaign %d: the summed deltas are not finite", r.Round, c.ID)
	}
	base, err := s.blobs.Open(r.BaseModel)
	if err != nil {
		return nil, fmt.Errorf("close round %d: base model: %w", r.Round, err)
	}
	defer base.Close()
	bw, err := s.blobs.Create()
	if err != nil {
		return nil, err
	}
	defer bw.Abort()
	next := r.Round + 1
	if err := sum.Apply(bw, base, map[string]string{"model": ci.spec.Model, "round": strconv.Itoa(next)}); err != nil {
		return nil, fmt.Errorf("close round %d: %w", r.Round, err)
	}
	sha, err := bw.Commit()
	if err != nil {
		return nil, err
	}
	now := s.now()
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&store.ModelVersion{SHA256: sha, CampaignID: c.ID,
		Round: next, Size: bw.Size(), CreatedAt: now}).Error; err != nil {
		return nil, err
	}
	if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", c.ID, r.Round).
		Updates(map[string]any{"state": store.RoundClosed, "result_model": sha, "closed_at": now}).Error; err != nil {
		return nil, err
	}
	if err := tx.Model(&store.WorkUnit{}).Where("campaign_id = ? AND round = ? AND state IN ?", c.ID, r.Round,
		[]string{store.WUIssued, store.WUExpired}).Updates(map[string]any{"state": store.WUClosed}).Error; err != nil {
		return nil, err
	}
	up := map[string]any{"round": next, "model_sha256": sha, "updated_at": now, "message": ""}
	if next >= ci.spec.Rounds {
		up["state"] = protocol.StateDone
		cl.done = true
	} else {
		nr := store.Round{CampaignID: c.ID, Round: next, State: store.RoundOpen, BaseModel: sha, Slots: ci.spec.WorkUnitsPerRound,
			Needed: Needed(ci.spec.Quorum, ci.spec.WorkUnitsPerRound), OpenedAt: now,
			Deadline: now.Add(time.Duration(ci.spec.RoundDeadline))}
		if err := tx.Create(&nr).Error; err != nil {
			return nil, err
		}
	}
	if err := tx.Model(&store.Campaign{}).Where("id = ?", c.ID).Updates(up).Error; err != nil {
		return nil, err
	}
	cl.model = sha
	cl.took = time.Since(start)
	return cl, nil
}

func (s *Scheduler) foldBlob(sum *weights.Sum, sha, dtype string, weight float64) error {
	f, err := s.blobs.Open(sha)
	if err != nil {
		return fmt.Errorf("fold delta: %w", err)
	}
	defer f.Close()
	if err := sum.Add(f, dtype, weight); err != nil {
		return fmt.Errorf("fold delta %s: %w", sha, err)
	}
	return nil
}

func (s *Scheduler) afterClose(ctx context.Context, cl *closed) {
	s.cfg.Counters.RoundClosed()
	s.log.Info("round closed", "campaign", cl.campaignID, "round", cl.round, "merged", len(cl.deltas),
		"model", cl.model[:12], "took", cl.took.Round(time.Millisecond), "campaign_done", cl.done)
	s.gcBlobs(ctx, cl.deltas...)
	if s.cfg.OnRoundClosed != nil {
		s.cfg.OnRoundClosed(cl.campaignID, cl.round)
	}
}

// gcBlobs removes delta blobs no longer needed: not a model version and not an accepted
// result of a round still open.
func (s *Scheduler) gcBlobs(ctx context.Context, shas ...string) {
	for _, sha := range shas {
		var n int64
		err := s.db.WithContext(ctx).Raw(`SELECT
			(SELECT COUNT(*) FROM model_versions WHERE sha256 = ?) +
			(SELECT COUNT(*) FROM results r JOIN rounds o ON o.campaign_id = r.campaign_id AND o.round = r.round
			  WHERE r.sha256 = ? AND r.outcome = ? AND o.state <> ?)`, sha, sha, protocol.OutcomeAccepted, store.RoundClosed).Scan(&n).Error
		if err != nil || n > 0 {
			continue
		}
		if err := s.blobs.Remove(sha); err != nil {
			s.log.Warn("remove delta blob", "sha256", sha, "err", err)
		}
	}
}
