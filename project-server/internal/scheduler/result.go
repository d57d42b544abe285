package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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
	w, err := s.ownWU(s.read(ctx), hostID, wuID)
	if err != nil {
		return nil, err
	}
	ci, err := s.infoByID(ctx, w.CampaignID)
	if err != nil {
		return nil, err
	}
	if resp, err, done := s.replay(s.read(ctx), w, meta.SHA256); done {
		return resp, err
	}
	// A stopped campaign aborts its open units, so the unit's state says it all.
	if w.State == store.WUAborted {
		return nil, fail(protocol.CodeWUClosed, "work unit %d was aborted (host detached or campaign stopped); drop it", wuID)
	}
	if contentLength > ci.deltaMax {
		return nil, fail(protocol.CodeTooLarge, "the delta is %d bytes; this campaign's model takes at most %d", contentLength, ci.deltaMax)
	}

	// Small deltas stay in memory and go into the result row; larger ones stream to a
	// blob file that is durable before the row naming it commits.
	var (
		sink   deltaSink
		mem    *memSink
		bw     *blob.Writer
		inline = contentLength >= 0 && contentLength <= store.InlineMax
	)
	if inline {
		mem = &memSink{h: sha256.New()}
		sink = mem
	} else {
		if bw, err = s.blobs.Create(); err != nil {
			return nil, err
		}
		defer bw.Abort()
		sink = bw
	}
	lr := &limitReader{r: body, n: ci.deltaMax}
	sum, err := weights.Check(io.TeeReader(lr, sink), ci.resolved.Params, ci.dtype, ci.spec.MaxDeltaNorm)
	switch {
	case lr.over:
		return nil, fail(protocol.CodeTooLarge, "the delta is over %d bytes, the most this campaign's model takes", ci.deltaMax)
	case errors.Is(err, weights.ErrTruncated):
		return nil, fail(protocol.CodeBadRequest, "the upload is truncated: %v", err)
	case errors.Is(err, weights.ErrInvalid):
		reason := err.Error()
		if rerr := s.recordInvalid(ctx, w, meta, sink.Size(), reason); rerr != nil {
			return nil, rerr
		}
		return nil, fail(protocol.CodeInvalidDelta, "%s", reason)
	case err != nil:
		if isTooLarge(err) {
			return nil, fail(protocol.CodeTooLarge, "the request body is over the size limit")
		}
		return nil, fail(protocol.CodeBadRequest, "reading the upload failed: %v", err)
	}
	if got := sink.Sum(); got != meta.SHA256 {
		return nil, fail(protocol.CodeBadRequest, "the body's sha256 is %s, not the %s in %s", got, meta.SHA256, protocol.HeaderSHA256)
	}
	if inline {
		return s.record(ctx, w, ci, meta, meta.SHA256, mem.Size(), sum.Norm, mem.buf.Bytes())
	}
	sha, err := bw.Commit()
	if err != nil {
		return nil, err
	}
	return s.record(ctx, w, ci, meta, sha, bw.Size(), sum.Norm, nil)
}

// deltaSink receives an upload while it is checked.
type deltaSink interface {
	io.Writer
	Sum() string
	Size() int64
}

// memSink keeps a small upload in memory and hashes it.
type memSink struct {
	buf bytes.Buffer
	h   hash.Hash
}

func (m *memSink) Write(p []byte) (int, error) {
	m.h.Write(p)
	return m.buf.Write(p)
}

func (m *memSink) Sum() string { return hex.EncodeToString(m.h.Sum(nil)) }

func (m *memSink) Size() int64 { return int64(m.buf.Len()) }

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
func (s *Scheduler) record(ctx context.Context, w0 *store.WorkUnit, ci *campaignInfo, meta ResultMeta, sha string, size int64, norm float64, data []byte) (*protocol.ResultResponse, error) {
	var (
		resp   *protocol.ResultResponse
		outErr error
		cl     *closed
	)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		cl, resp, outErr = nil, nil, nil
		q := s.raw(tx)
		var r store.Round
		lock := ""
		if s.db.Postgres {
			lock = " FOR UPDATE"
		}
		if err := q.row(`SELECT state, needed, accepted, issued, next_slot FROM rounds WHERE campaign_id = ? AND round = ?`+lock,
			w0.CampaignID, w0.Round).Scan(&r.State, &r.Needed, &r.Accepted, &r.Issued, &r.NextSlot); err != nil {
			return fmt.Errorf("round %d: %w", w0.Round, err)
		}
		now := s.now()
		credit := float64(w0.FLOPs) * CreditPerFLOP
		outcome := protocol.OutcomeAccepted
		if r.State == store.RoundClosed {
			outcome = protocol.OutcomeLate
		} else if r.Issued > r.NextSlot {
			// Slots were reissued in this round: another issue of this slot may have
			// been merged already.
			var dup int64
			if err := q.row(`SELECT COUNT(*) FROM work_units WHERE campaign_id = ? AND round = ? AND slot = ? AND state = ?`,
				w0.CampaignID, w0.Round, w0.Slot, store.WUAccepted).Scan(&dup); err != nil {
				return err
			}
			if dup > 0 {
				outcome = protocol.OutcomeLate
			}
		}
		// Claim the unit; if it is no longer open, something else recorded or aborted it.
		claimed, err := q.exec(`UPDATE work_units SET state = ?, finished_at = ?, progress = 1 WHERE id = ? AND state IN (?, ?, ?)`,
			outcome, now, w0.ID, store.WUIssued, store.WUExpired, store.WUClosed)
		if err != nil {
			return err
		}
		if claimed == 0 {
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
			outErr = fail(protocol.CodeWUClosed, "work unit %d was aborted (host detached or campaign stopped); drop it", w.ID)
			return nil
		}
		var inline []byte
		if outcome == protocol.OutcomeAccepted && len(data) > 0 {
			inline = data
		}
		if _, err := q.exec(`INSERT INTO results (work_unit_id, host_id, campaign_id, round, sha256, size, outcome, reason,
			samples, loss, norm, credit, created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)`,
			w0.ID, w0.HostID, w0.CampaignID, w0.Round, sha, size, outcome, meta.Samples, meta.Loss, norm, credit, now, inline); err != nil {
			return err
		}
		if _, err := q.exec(`UPDATE hosts SET results_valid = results_valid + 1, credit = credit + ?, last_contact = ? WHERE id = ?`,
			credit, now, w0.HostID); err != nil {
			return err
		}
		resp = &protocol.ResultResponse{Outcome: outcome, Round: w0.Round, Credit: credit}
		if outcome == protocol.OutcomeLate {
			outErr = lateError(w0)
			_, err := q.exec(`UPDATE rounds SET late = late + 1 WHERE campaign_id = ? AND round = ?`, w0.CampaignID, w0.Round)
			return err
		}
		if _, err := q.exec(`UPDATE rounds SET accepted = accepted + 1, samples_trained = samples_trained + ? WHERE campaign_id = ? AND round = ?`,
			meta.Samples, w0.CampaignID, w0.Round); err != nil {
			return err
		}
		if r.Accepted+1 >= r.Needed {
			var c store.Campaign
			if err := tx.Take(&c, w0.CampaignID).Error; err != nil {
				return err
			}
			full, err := s.lockRound(tx, w0.CampaignID, w0.Round)
			if err != nil {
				return err
			}
			cl, err = s.closeRound(tx, &c, ci, full)
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
	if resp != nil && resp.Outcome == protocol.OutcomeLate && !resp.Replayed && data == nil {
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
	rows, err := tx.Model(&store.Result{}).Select("sha256", "samples", "data").
		Where("campaign_id = ? AND round = ? AND outcome = ?", c.ID, r.Round, protocol.OutcomeAccepted).Order("id").Rows()
	if err != nil {
		return nil, err
	}
	// Reuse the previous close's sum storage (two model sizes of float64) when no other
	// close holds it, so memory stays one running sum across rounds.
	var sum *weights.Sum
	if s.sumMu.TryLock() {
		sum = weights.NewSumIn(ci.resolved.Params, s.sumBuf)
		s.sumBuf = sum.Storage()
		defer s.sumMu.Unlock()
	} else {
		sum = weights.NewSum(ci.resolved.Params)
	}
	cl := &closed{campaignID: c.ID, round: r.Round}
	n := 0
	for rows.Next() {
		var res store.Result
		if err := tx.ScanRows(rows, &res); err != nil {
			rows.Close()
			return nil, err
		}
		weight := 1.0
		if ci.spec.WeightBySamples && res.Samples > 0 {
			weight = float64(res.Samples)
		}
		if len(res.Data) > 0 {
			err = sum.Add(bytes.NewReader(res.Data), ci.dtype, weight)
		} else {
			err = s.foldBlob(sum, res.SHA256, ci.dtype, weight)
			cl.deltas = append(cl.deltas, res.SHA256)
		}
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("close round %d: delta %s: %w", r.Round, res.SHA256, err)
		}
		n++
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("close round %d of campaign %d: no accepted result", r.Round, c.ID)
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
	if err := tx.Model(&store.Result{}).Where("campaign_id = ? AND round = ? AND COALESCE(length(data), 0) > 0", c.ID, r.Round).
		Update("data", nil).Error; err != nil {
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
	if len(shas) == 0 {
		return
	}
	var keep []string
	err := s.read(ctx).Raw(`SELECT sha256 FROM model_versions WHERE sha256 IN ?
		UNION SELECT r.sha256 FROM results r JOIN rounds o ON o.campaign_id = r.campaign_id AND o.round = r.round
		WHERE r.sha256 IN ? AND r.outcome = ? AND o.state <> ?`, shas, shas, protocol.OutcomeAccepted, store.RoundClosed).Scan(&keep).Error
	if err != nil {
		s.log.Warn("blob collection", "err", err)
		return
	}
	kept := make(map[string]bool, len(keep))
	for _, k := range keep {
		kept[k] = true
	}
	for _, sha := range shas {
		if kept[sha] {
			continue
		}
		if err := s.blobs.Remove(sha); err != nil {
			s.log.Warn("remove delta blob", "sha256", sha, "err", err)
		}
	}
}
