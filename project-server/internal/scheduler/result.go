package scheduler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
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

	"github.com/texgrid/texgrid/project-server/internal/aggregate"
	"github.com/texgrid/texgrid/project-server/internal/blob"
	"github.com/texgrid/texgrid/project-server/internal/policy"
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
	if resp, err, done := s.replay(s.read(ctx), w, ci, meta.SHA256); done {
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

// recorded are the outcomes of a result that was read and kept (merged or not); a
// work unit's state is its result's outcome.
var recorded = []string{protocol.OutcomeAccepted, protocol.OutcomeLate, protocol.OutcomeStale, protocol.OutcomeDuplicate, protocol.OutcomeOverLimit}

// replay answers a result for a work unit whose result was already recorded.
func (s *Scheduler) replay(db *gorm.DB, w *store.WorkUnit, ci *campaignInfo, sha string) (*protocol.ResultResponse, error, bool) {
	switch w.State {
	case store.WUAccepted, store.WULate, store.WUStale, store.WUDuplicate, store.WUOverLimit:
	default:
		return nil, nil, false
	}
	var prev store.Result
	err := db.Where("work_unit_id = ? AND outcome IN ?", w.ID, recorded).Take(&prev).Error
	if err != nil {
		return nil, fmt.Errorf("replay of work unit %d: %w", w.ID, err), true
	}
	if prev.SHA256 != sha {
		return nil, fail(protocol.CodeConflict, "work unit %d already has a %s result with sha256 %s; a different one is refused", w.ID, prev.Outcome, prev.SHA256), true
	}
	resp := &protocol.ResultResponse{Outcome: prev.Outcome, Round: prev.Round, Credit: prev.Credit, Replayed: true}
	if ci.mode.KeepsUnits() && prev.Outcome != protocol.OutcomeLate {
		resp.Version, resp.Staleness = prev.BufferRound, prev.Staleness
	}
	return resp, notMerged(w, ci, prev.Outcome, prev.Reason, prev.Staleness), true
}

func lateError(w *store.WorkUnit) error {
	return fail(protocol.CodeLate, "round %d closed before the result of work unit %d arrived; it was recorded and credited, not merged", w.Round, w.ID)
}

// notMerged is the refusal that goes with an outcome other than accepted (nil for
// accepted); tau is a stale result's staleness.
func notMerged(w *store.WorkUnit, ci *campaignInfo, outcome, reason string, tau int) error {
	switch outcome {
	case protocol.OutcomeLate:
		return lateError(w)
	case protocol.OutcomeStale:
		return fail(protocol.CodeStale, "the result of work unit %d was trained on version %d, %d versions behind the newest (max_staleness %d); it was recorded and credited, not merged",
			w.ID, w.Round, tau, ci.spec.MaxStaleness)
	case protocol.OutcomeDuplicate:
		return fail(protocol.CodeDuplicate, "the result of work unit %d was recorded, not merged or credited: %s", w.ID, reason)
	case protocol.OutcomeOverLimit:
		return fail(protocol.CodeAccountLimit, "the result of work unit %d was recorded and credited, not merged: %s", w.ID, reason)
	}
	return nil
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
			BufferRound: w.Round, SHA256: meta.SHA256, Size: size, Outcome: store.OutcomeInvalid, Reason: reason, Samples: meta.Samples,
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
	eval       bool // the mode evaluates the new model
	chain      bool // the next version may already be closed, waiting for this model
	took       time.Duration
}

// Queries of record's transaction (states are literals, see qRunning).
var (
	qRecordRound   = txQuery(`SELECT round, state, needed, accepted, issued, next_slot FROM rounds WHERE campaign_id = ? AND round = ?`)
	qRecordRoundPG = txQueryPG(`SELECT round, state, needed, accepted, issued, next_slot FROM rounds WHERE campaign_id = ? AND round = ? FOR UPDATE`)
	// The newest version of an asynchronous campaign, whose buffer takes results.
	qNewestRound   = txQuery(`SELECT round, state, needed, accepted, issued, next_slot FROM rounds WHERE campaign_id = ? ORDER BY round DESC LIMIT 1`)
	qNewestRoundPG = txQueryPG(`SELECT round, state, needed, accepted, issued, next_slot FROM rounds WHERE campaign_id = ? ORDER BY round DESC LIMIT 1 FOR UPDATE`)
	qSlotMerged    = txQuery(`SELECT COUNT(*) FROM work_units WHERE campaign_id = ? AND round = ? AND slot = ? AND state = '` + store.WUAccepted + `'`)
	qClaimWU       = txQuery(`UPDATE work_units SET state = ?, finished_at = ?, progress = 1 WHERE id = ?
		AND state IN ('` + store.WUIssued + `', '` + store.WUExpired + `', '` + store.WUClosed + `')`)
	qInsertResult = txQuery(`INSERT INTO results (work_unit_id, host_id, campaign_id, round, buffer_round, staleness, weight,
		sha256, size, outcome, reason, samples, loss, norm, credit, created_at, data, flag)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	qCreditHost    = txQuery(`UPDATE hosts SET results_valid = results_valid + 1, credit = credit + ?, last_contact = ? WHERE id = ?`)
	qRoundLate     = txQuery(`UPDATE rounds SET late = late + 1 WHERE campaign_id = ? AND round = ?`)
	qRoundStale    = txQuery(`UPDATE rounds SET stale = stale + 1 WHERE campaign_id = ? AND round = ?`)
	qRoundAccepted = txQuery(`UPDATE rounds SET accepted = accepted + 1, samples_trained = samples_trained + ? WHERE campaign_id = ? AND round = ?`)
	// A round merges one copy of a delta, and at most the campaign's bound of one
	// account's results.
	qMergedCopy = txQuery(`SELECT id, work_unit_id, host_id FROM results WHERE campaign_id = ? AND buffer_round = ? AND sha256 = ?
		AND outcome = '` + protocol.OutcomeAccepted + `' ORDER BY id LIMIT 1`)
	qAccountMerged = txQuery(`SELECT COUNT(*) FROM results r JOIN hosts h ON h.id = r.host_id WHERE r.campaign_id = ? AND r.buffer_round = ?
		AND r.outcome = '` + protocol.OutcomeAccepted + `' AND h.account_id = (SELECT account_id FROM hosts WHERE id = ?)`)
	qFlagMerged = txQuery(`UPDATE results SET flag = CASE WHEN flag = '' THEN ? ELSE flag || '; ' || ? END WHERE id = ?`)
	qFlagHost   = txQuery(`UPDATE hosts SET results_flagged = results_flagged + 1, last_contact = ? WHERE id = ?`)
	qFlagHostTo = txQuery(`UPDATE hosts SET results_flagged = results_flagged + 1 WHERE id = ?`)
	qRoundDup   = txQuery(`UPDATE rounds SET duplicates = duplicates + 1 WHERE campaign_id = ? AND round = ?`)
	qRoundOver  = txQuery(`UPDATE rounds SET over_limit = over_limit + 1 WHERE campaign_id = ? AND round = ?`)
)

// merged is the merged copy of a delta that a new result duplicates.
type merged struct {
	id, wu, host int64
}

// mergeable decides the outcome of a valid result accepted into an open round's buffer
// (round: the unit's round in sync mode, the newest version in async mode): duplicate when the round already merged a byte-identical delta (the
// same sha256), over_limit when the host's account already has the campaign's bound of
// merged results in the round, else accepted. It runs under the round's lock.
func (s *Scheduler) mergeable(q raw, w *store.WorkUnit, ci *campaignInfo, round int, sha string) (string, *merged, error) {
	var m merged
	err := q.row(qMergedCopy, w.CampaignID, round, sha).Scan(&m.id, &m.wu, &m.host)
	if err == nil {
		return protocol.OutcomeDuplicate, &m, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", nil, err
	}
	if limit := ci.spec.MaxResultsPerAccount; limit > 0 {
		var n int
		if err := q.row(qAccountMerged, w.CampaignID, round, w.HostID).Scan(&n); err != nil {
			return "", nil, err
		}
		if n >= limit {
			return protocol.OutcomeOverLimit, nil, nil
		}
	}
	return protocol.OutcomeAccepted, nil, nil
}

// record commits a valid result whose blob is durable.
func (s *Scheduler) record(ctx context.Context, w0 *store.WorkUnit, ci *campaignInfo, meta ResultMeta, sha string, size int64, norm float64, data []byte) (*protocol.ResultResponse, error) {
	var (
		resp       *protocol.ResultResponse
		outErr     error
		closing    bool // this result completed the quorum: the round is marked closed
		closeRound int  // which round
	)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		closing, closeRound, resp, outErr = false, 0, nil, nil
		q := s.raw(tx)
		// The round whose buffer would take the result: the unit's own round in
		// synchronous mode, the newest version in asynchronous mode.
		var r store.Round
		qRound, args := qRecordRound, []any{w0.CampaignID, w0.Round}
		if ci.mode.KeepsUnits() {
			qRound, args = qNewestRound, args[:1]
		}
		if s.db.Postgres {
			qRound = map[string]string{qRecordRound: qRecordRoundPG, qNewestRound: qNewestRoundPG}[qRound]
		}
		if err := q.row(qRound, args...).Scan(&r.Round, &r.State, &r.Needed, &r.Accepted, &r.Issued, &r.NextSlot); err != nil {
			return fmt.Errorf("round of work unit %d (round %d): %w", w0.ID, w0.Round, err)
		}
		for ci.mode.KeepsUnits() && r.State == store.RoundClosed {
			// On PostgreSQL the row lock may have waited for a transaction that closed
			// this version and opened the next, which is visible to a new statement:
			// read again until the newest version is open or stays the same (the
			// campaign's last version closed).
			prev := r.Round
			if err := q.row(qRound, args...).Scan(&r.Round, &r.State, &r.Needed, &r.Accepted, &r.Issued, &r.NextSlot); err != nil {
				return fmt.Errorf("round of work unit %d (round %d): %w", w0.ID, w0.Round, err)
			}
			if r.Round < prev {
				return fmt.Errorf("round of work unit %d: the newest version went from %d back to %d", w0.ID, prev, r.Round)
			}
			if r.Round == prev {
				break
			}
		}
		now := s.now()
		credit := float64(w0.FLOPs) * CreditPerFLOP
		arr := policy.Arrival{Base: w0.Round, Current: r.Round, Open: r.State != store.RoundClosed}
		if arr.Open && r.Round == w0.Round && r.Issued > r.NextSlot {
			// Slots were reissued in this round: another issue of this slot may have
			// been merged already.
			var dup int64
			if err := q.row(qSlotMerged, w0.CampaignID, w0.Round, w0.Slot).Scan(&dup); err != nil {
				return err
			}
			arr.SlotMerged = dup > 0
		}
		adm := ci.mode.Admit(arr)
		outcome, bufferRound := adm.Outcome, r.Round
		if outcome == protocol.OutcomeLate {
			bufferRound = w0.Round
		}
		var (
			copyOf *merged
			reason string
			flag   string
		)
		if outcome == protocol.OutcomeAccepted {
			var err error
			if outcome, copyOf, err = s.mergeable(q, w0, ci, bufferRound, sha); err != nil {
				return err
			}
		}
		switch outcome {
		case protocol.OutcomeDuplicate:
			credit = 0
			reason = fmt.Sprintf("byte-identical to the result of work unit %d (host %d), already merged in round %d", copyOf.wu, copyOf.host, w0.Round)
			flag = fmt.Sprintf("same delta as work unit %d (host %d)", copyOf.wu, copyOf.host)
		case protocol.OutcomeOverLimit:
			reason = fmt.Sprintf("the host's account already has the campaign's %d merged results of round %d (max_results_per_account)",
				ci.spec.MaxResultsPerAccount, w0.Round)
		}
		// Claim the unit; if it is no longer open, something else recorded or aborted it.
		claimed, err := q.exec(qClaimWU, outcome, now, w0.ID)
		if err != nil {
			return err
		}
		if claimed == 0 {
			var w store.WorkUnit
			if err := tx.Take(&w, w0.ID).Error; err != nil {
				return err
			}
			if rr, rerr, done := s.replay(tx, &w, ci, sha); done {
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
		if _, err := q.exec(qInsertResult, w0.ID, w0.HostID, w0.CampaignID, w0.Round, bufferRound, adm.Staleness, adm.Weight,
			sha, size, outcome, reason, meta.Samples, meta.Loss, norm, credit, now, inline, flag); err != nil {
			return err
		}
		resp = &protocol.ResultResponse{Outcome: outcome, Round: w0.Round, Credit: credit}
		if ci.mode.KeepsUnits() && outcome != protocol.OutcomeLate {
			resp.Version, resp.Staleness = bufferRound, adm.Staleness
		}
		outErr = notMerged(w0, ci, outcome, reason, adm.Staleness)
		if outcome == protocol.OutcomeDuplicate {
			// Both hosts are flagged: which of them trained and which copied is not
			// known. The copy earns nothing.
			mark := fmt.Sprintf("same delta as work unit %d (host %d), not merged", w0.ID, w0.HostID)
			if _, err := q.exec(qFlagMerged, mark, mark, copyOf.id); err != nil {
				return err
			}
			if _, err := q.exec(qFlagHost, now, w0.HostID); err != nil {
				return err
			}
			if _, err := q.exec(qFlagHostTo, copyOf.host); err != nil {
				return err
			}
			_, err := q.exec(qRoundDup, w0.CampaignID, bufferRound)
			return err
		}
		if _, err := q.exec(qCreditHost, credit, now, w0.HostID); err != nil {
			return err
		}
		switch outcome {
		case protocol.OutcomeLate:
			_, err := q.exec(qRoundLate, w0.CampaignID, w0.Round)
			return err
		case protocol.OutcomeStale:
			_, err := q.exec(qRoundStale, w0.CampaignID, bufferRound)
			return err
		case protocol.OutcomeOverLimit:
			_, err := q.exec(qRoundOver, w0.CampaignID, bufferRound)
			return err
		}
		if _, err := q.exec(qRoundAccepted, meta.Samples, w0.CampaignID, bufferRound); err != nil {
			return err
		}
		if r.Accepted+1 >= r.Needed {
			closing, closeRound = true, bufferRound
			return s.markClosed(q, ci, w0.CampaignID, bufferRound, now)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record result of work unit %d: %w", w0.ID, err)
	}
	if resp != nil && !resp.Replayed {
		s.cfg.Counters.Result(resp.Outcome)
	}
	if resp != nil && resp.Outcome != protocol.OutcomeAccepted && !resp.Replayed && data == nil {
		s.gcBlobs(ctx, sha) // kept while a merged copy of the same delta needs it
	}
	if closing {
		// The result is committed whatever happens now: a close that fails here is
		// finished by the next Tick or by Recover.
		if err := s.finishClose(ctx, w0.CampaignID, closeRound); err != nil {
			s.log.Error("round close", "campaign", w0.CampaignID, "round", closeRound, "err", err)
		}
	}
	return resp, outErr
}

// Queries of a round close.
var (
	qCloseRound = txQuery(`UPDATE rounds SET state = '` + store.RoundClosed + `', closed_at = ? WHERE campaign_id = ? AND round = ?`)
	qCloseWUs   = txQuery(`UPDATE work_units SET state = '` + store.WUClosed + `' WHERE campaign_id = ? AND round = ?
		AND state IN ('` + store.WUIssued + `', '` + store.WUExpired + `')`)
	qOpenNext = txQuery(`INSERT INTO rounds (campaign_id, round, state, base_model, slots, needed, opened_at, deadline)
		VALUES (?, ?, '` + store.RoundOpen + `', '', ?, ?, ?, ?)`)
)

// markClosed is the first half of a round close, inside the transaction that accepted
// the quorum's last result: the round is closed (later results are late, never merged)
// and its unfinished units are closed. Its set of accepted results is final from this
// commit on, and finishClose folds them into W(r+1) outside any transaction, so the
// one SQLite writer is never held while a model is summed, written and synced. A round
// that is closed with no result model yet is a close in progress; Tick and Recover
// finish it if its first attempt failed or the process died.
//
// In a mode that keeps units (asynchronous), the units stay live and the next version
// opens at once, its base model empty until finishClose commits W(r+1): results that
// arrive meanwhile fill its buffer (their staleness counted against r+1), and hosts get
// work again once the campaign's round moves on. No next version opens past the
// campaign's last.
func (s *Scheduler) markClosed(q raw, ci *campaignInfo, campaignID int64, round int, now time.Time) error {
	if _, err := q.exec(qCloseRound, now, campaignID, round); err != nil {
		return err
	}
	if !ci.mode.KeepsUnits() {
		_, err := q.exec(qCloseWUs, campaignID, round)
		return err
	}
	if round+1 >= ci.spec.Rounds {
		return nil
	}
	_, err := q.exec(qOpenNext, campaignID, round+1, ci.mode.Slots(), ci.mode.Needed(), now, now.Add(time.Duration(ci.spec.RoundDeadline)))
	return err
}

// roundKey names a round of a campaign.
type roundKey struct {
	campaign int64
	round    int
}

// finishClose is the second half of a round close: it folds the closed round's
// accepted deltas into W(r+1) = W(r) + their mean, makes the model blob durable, then
// in one short transaction records it, opens round r+1 (or finishes the campaign) and
// drops the merged deltas' inline bytes. The deltas are read one at a time, so memory
// stays one running sum. It does nothing for a round that is not closed or already has
// its model, and at most one call per round runs at a time; since the fold is
// deterministic, a second attempt writes the same model. A call that finds another
// running waits for it.
func (s *Scheduler) finishClose(ctx context.Context, campaignID int64, round int) error {
	key := roundKey{campaignID, round}
	s.closeMu.Lock()
	if running, ok := s.closing[key]; ok {
		s.closeMu.Unlock()
		<-running // its caller answers once the close is done, whoever did it
		return nil
	}
	done := make(chan struct{})
	s.closing[key] = done
	s.closeMu.Unlock()
	defer func() {
		s.closeMu.Lock()
		delete(s.closing, key)
		s.closeMu.Unlock()
		close(done)
	}()
	cl, err := s.foldRound(ctx, campaignID, round)
	if err != nil {
		return fmt.Errorf("close round %d of campaign %d: %w", round, campaignID, err)
	}
	if cl != nil {
		s.afterClose(ctx, cl)
		if cl.chain && !cl.done {
			// The next version's buffer may have filled while this close ran; its fold
			// waited for the model this one made.
			return s.finishClose(ctx, campaignID, round+1)
		}
	}
	return nil
}

func (s *Scheduler) foldRound(ctx context.Context, campaignID int64, round int) (*closed, error) {
	start := time.Now()
	ci, err := s.infoByID(ctx, campaignID)
	if err != nil {
		return nil, err
	}
	var r store.Round
	if err := s.read(ctx).Where("campaign_id = ? AND round = ?", campaignID, round).Take(&r).Error; err != nil {
		return nil, err
	}
	if r.State != store.RoundClosed || r.ResultModel != "" || r.BaseModel == "" {
		// Not closed, already folded, or (asynchronous mode) its base W(r) is the
		// result of a close still in progress, which folds this one after it.
		return nil, nil
	}
	var res []store.Result
	if err := s.read(ctx).Select("sha256", "samples", "weight", "data").
		Where("campaign_id = ? AND buffer_round = ? AND outcome = ?", campaignID, round, protocol.OutcomeAccepted).
		Order("id").Find(&res).Error; err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no accepted result")
	}
	cl := &closed{campaignID: campaignID, round: round, eval: ci.mode.EvaluateAfter(round), chain: ci.mode.KeepsUnits()}
	deltas := make([]aggregate.Delta, len(res))
	for k := range res {
		d := &res[k]
		deltas[k] = aggregate.Delta{Name: d.SHA256, Samples: d.Samples, Weight: d.Weight, Open: s.deltaOpener(d)}
		if len(d.Data) == 0 {
			cl.deltas = append(cl.deltas, d.SHA256)
		}
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
	if err := ci.agg.Aggregate(ctx, deltas, ci.dtype, sum); err != nil {
		return nil, err
	}
	// The server optimiser turns the mean into the step; its state after this round
	// is a blob that is durable before the row naming it commits.
	sum.Normalize()
	prevState, optState, err := s.optimizerStep(ctx, ci, campaignID, round, sum)
	if err != nil {
		return nil, err
	}
	base, err := s.blobs.Open(r.BaseModel)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	defer base.Close()
	bw, err := s.blobs.Create()
	if err != nil {
		return nil, err
	}
	defer bw.Abort()
	next := round + 1
	if err := sum.Apply(bw, base, map[string]string{"model": ci.spec.Model, "round": strconv.Itoa(next)}); err != nil {
		return nil, err
	}
	sha, err := bw.Commit()
	if err != nil {
		return nil, err
	}
	err = s.tx(ctx, func(tx *gorm.DB) error {
		cl.done = false
		now := s.now()
		res := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ? AND state = ? AND result_model = ''", campaignID, round, store.RoundClosed).
			Updates(roundClose(sha, optState, cl.eval || next >= ci.spec.Rounds, ci.spec.EvalEvery))
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return errFinished
		}
		if prevState != "" {
			if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", campaignID, round-1).Update("opt_state", "").Error; err != nil {
				return err
			}
		}
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&store.ModelVersion{SHA256: sha, CampaignID: campaignID,
			Round: next, Size: bw.Size(), CreatedAt: now}).Error; err != nil {
			return err
		}
		if err := tx.Model(&store.Result{}).Where("campaign_id = ? AND buffer_round = ? AND COALESCE(length(data), 0) > 0", campaignID, round).
			Update("data", nil).Error; err != nil {
			return err
		}
		up := map[string]any{"round": next, "model_sha256": sha, "updated_at": now, "message": ""}
		if next >= ci.spec.Rounds {
			up["state"] = protocol.StateDone
			cl.done = true
		} else if ci.mode.KeepsUnits() {
			// The next version opened when this one closed; it gets its base now.
			if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", campaignID, next).
				Updates(map[string]any{"base_model": sha, "opened_at": now, "deadline": now.Add(time.Duration(ci.spec.RoundDeadline))}).Error; err != nil {
				return err
			}
		} else {
			nr := store.Round{CampaignID: campaignID, Round: next, State: store.RoundOpen, BaseModel: sha, Slots: ci.mode.Slots(),
				Needed: ci.mode.Needed(), OpenedAt: now,
				Deadline: now.Add(time.Duration(ci.spec.RoundDeadline))}
			if err := tx.Create(&nr).Error; err != nil {
				return err
			}
		}
		return tx.Model(&store.Campaign{}).Where("id = ? AND round = ?", campaignID, round).Updates(up).Error
	})
	if errors.Is(err, errFinished) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var users int64
	if prevState != "" && prevState != optState &&
		s.read(ctx).Model(&store.Round{}).Where("opt_state = ?", prevState).Count(&users).Error == nil && users == 0 {
		// Content-addressed: another campaign's round may name the same state.
		if err := s.blobs.Remove(prevState); err != nil {
			s.log.Warn("remove optimizer state", "sha256", prevState, "err", err)
		}
	}
	cl.model = sha
	cl.took = time.Since(start)
	return cl, nil
}

// roundClose is the update that records a round's result model and optimiser state.
// A model the mode does not evaluate is marked so (in eval_error, which the evaluator
// skips) rather than left looking like one waiting for evaluation.
func roundClose(model, optState string, evaluate bool, every int) map[string]any {
	up := map[string]any{"result_model": model, "opt_state": optState}
	if !evaluate {
		up["eval_error"] = fmt.Sprintf("not evaluated: the campaign evaluates every %d versions", every)
	}
	return up
}

// optimizerStep applies the campaign's server optimiser to the normalised mean in sum,
// starting from the state the previous round left (zero for the first), and returns
// that state's blob and the blob of the new state ("" for a stateless optimiser).
func (s *Scheduler) optimizerStep(ctx context.Context, ci *campaignInfo, campaignID int64, round int, sum *weights.Sum) (prev, next string, err error) {
	n := ci.opt.Moments()
	if n == 0 {
		ci.opt.Step(sum.Values(), nil)
		return "", "", nil
	}
	state := aggregate.NewState(ci.resolved.Params, n)
	if round > 0 {
		var r store.Round
		if err := s.read(ctx).Select("opt_state").Where("campaign_id = ? AND round = ?", campaignID, round-1).Take(&r).Error; err != nil {
			return "", "", fmt.Errorf("optimizer state of round %d: %w", round-1, err)
		}
		if prev = r.OptState; prev != "" {
			f, err := s.blobs.Open(prev)
			if err != nil {
				return "", "", fmt.Errorf("optimizer state of round %d: %w", round-1, err)
			}
			state, err = aggregate.DecodeState(f, ci.resolved.Params, n)
			f.Close()
			if err != nil {
				return "", "", fmt.Errorf("optimizer state of round %d: %w", round-1, err)
			}
		}
	}
	ci.opt.Step(sum.Values(), state)
	var buf bytes.Buffer
	if err := aggregate.EncodeState(&buf, ci.resolved.Params, state); err != nil {
		return "", "", err
	}
	if next, err = s.blobs.Put(buf.Bytes()); err != nil {
		return "", "", fmt.Errorf("optimizer state of round %d: %w", round, err)
	}
	return prev, next, nil
}

// errFinished rolls back a second attempt at a close another attempt finished.
var errFinished = errors.New("round close already finished")

// finishPending finishes the closes in progress that no call is running: a close
// whose first attempt failed, or that a killed process left.
func (s *Scheduler) finishPending(ctx context.Context) error {
	var rs []store.Round
	if err := s.read(ctx).Select("campaign_id", "round").Where("state = ? AND result_model = ''", store.RoundClosed).
		Order("campaign_id, round").Find(&rs).Error; err != nil {
		return err
	}
	for _, r := range rs {
		if err := s.finishClose(ctx, r.CampaignID, r.Round); err != nil {
			return err
		}
	}
	return nil
}

// deltaOpener opens an accepted result's delta: its bytes when they were kept in its
// row, else its blob.
func (s *Scheduler) deltaOpener(r *store.Result) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if len(r.Data) > 0 {
			return io.NopCloser(bytes.NewReader(r.Data)), nil
		}
		f, err := s.blobs.Open(r.SHA256)
		if err != nil {
			return nil, fmt.Errorf("delta %s: %w", r.SHA256, err)
		}
		return f, nil
	}
}

func (s *Scheduler) afterClose(ctx context.Context, cl *closed) {
	s.campaignsChanged()
	s.cfg.Counters.RoundClosed()
	s.log.Info("round closed", "campaign", cl.campaignID, "round", cl.round, "merged", len(cl.deltas),
		"model", cl.model[:12], "took", cl.took.Round(time.Millisecond), "campaign_done", cl.done)
	s.gcBlobs(ctx, cl.deltas...)
	if s.cfg.OnRoundClosed != nil && (cl.eval || cl.done) {
		s.cfg.OnRoundClosed(cl.campaignID, cl.round)
	}
}

// gcBlobs removes delta blobs no longer needed: not a model version and not an accepted
// result of a round still open or being closed.
func (s *Scheduler) gcBlobs(ctx context.Context, shas ...string) {
	if len(shas) == 0 {
		return
	}
	var keep []string
	err := s.read(ctx).Raw(`SELECT sha256 FROM model_versions WHERE sha256 IN ?
		UNION SELECT r.sha256 FROM results r JOIN rounds o ON o.campaign_id = r.campaign_id AND o.round = r.buffer_round
		WHERE r.sha256 IN ? AND r.outcome = ? AND (o.state <> ? OR o.result_model = '')`, shas, shas, protocol.OutcomeAccepted, store.RoundClosed).Scan(&keep).Error
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
