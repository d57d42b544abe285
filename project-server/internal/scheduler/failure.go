package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"gorm.io/gorm"

	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// MaxFailureMessage bounds the message of a failure report.
const MaxFailureMessage = 1000

// Queries of ReportFailure (states are literals, see qRunning).
var (
	qFailWU = txQuery(`UPDATE work_units SET state = '` + store.WUFailed + `', finished_at = ? WHERE id = ?
		AND state IN ('` + store.WUIssued + `', '` + store.WUExpired + `', '` + store.WUClosed + `')`)
	qInsertFailure = txQuery(`INSERT INTO results (work_unit_id, host_id, campaign_id, round, buffer_round, sha256, size, outcome, reason,
		samples, loss, norm, credit, created_at) VALUES (?, ?, ?, ?, ?, '', 0, '` + store.OutcomeFailed + `', ?, 0, 0, 0, 0, ?)`)
	qHostFailed  = txQuery(`UPDATE hosts SET results_failed = results_failed + 1, last_contact = ? WHERE id = ?`)
	qRoundFailed = txQuery(`UPDATE rounds SET failed = failed + 1 WHERE campaign_id = ? AND round = ?`)
	qRoundState  = txQuery(`SELECT state FROM rounds WHERE campaign_id = ? AND round = ?`)
	qSlotIssues  = txQuery(`SELECT COUNT(*) FROM work_units WHERE campaign_id = ? AND round = ? AND slot = ?`)
)

// ReportFailure records that a host gave up a work unit it cannot finish (its training
// diverged): the unit becomes failed, a results row with outcome failed keeps the
// reason, and the host's and the round's failure counts go up. The slot is reissued to
// another host, as for an expired unit, while it has attempts left (MaxAttempts) and
// the round is open; otherwise the round goes on by its usual rules (it closes at its
// quorum, or is marked stuck at its deadline). A unit that was aborted, or whose
// result is already in, is refused with wu_closed or conflict and nothing is recorded;
// a second report of the same unit is answered again with Replayed set.
func (s *Scheduler) ReportFailure(ctx context.Context, hostID, wuID int64, req *protocol.FailureRequest) (*protocol.FailureResponse, error) {
	switch {
	case req.Reason != protocol.FailureDiverged:
		return nil, fail(protocol.CodeBadRequest, "reason %q is not a failure reason: want %q", req.Reason, protocol.FailureDiverged)
	case len(req.Message) > MaxFailureMessage:
		return nil, fail(protocol.CodeBadRequest, "message is %d bytes; at most %d", len(req.Message), MaxFailureMessage)
	case math.IsNaN(req.Progress) || req.Progress < 0 || req.Progress > 1 || req.Epoch < 0:
		return nil, fail(protocol.CodeBadRequest, "progress must be in 0..1 and epoch non-negative")
	}
	reason := req.Reason
	if msg := strings.TrimSpace(req.Message); msg != "" {
		reason += ": " + msg
	}
	var (
		resp   *protocol.FailureResponse
		outErr error
		w      *store.WorkUnit
	)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		resp, outErr = nil, nil
		var err error
		if w, err = s.ownWU(tx, hostID, wuID); err != nil {
			return err
		}
		switch w.State {
		case store.WUFailed:
			resp = &protocol.FailureResponse{Round: w.Round, Replayed: true}
			return nil
		case store.WUAccepted, store.WULate:
			outErr = fail(protocol.CodeConflict, "work unit %d already has a %s result; a failure report is refused", wuID, w.State)
			return nil
		case store.WUAborted:
			outErr = fail(protocol.CodeWUClosed, "work unit %d was aborted (host detached or campaign stopped); drop it", wuID)
			return nil
		}
		q := s.raw(tx)
		now := s.now()
		claimed, err := q.exec(qFailWU, now, wuID)
		if err != nil {
			return err
		}
		if claimed == 0 {
			outErr = fail(protocol.CodeWUClosed, "work unit %d ended while its failure was reported; drop it", wuID)
			return nil
		}
		if _, err := q.exec(qInsertFailure, w.ID, hostID, w.CampaignID, w.Round, w.Round, reason, now); err != nil {
			return err
		}
		if _, err := q.exec(qHostFailed, now, hostID); err != nil {
			return err
		}
		if _, err := q.exec(qRoundFailed, w.CampaignID, w.Round); err != nil {
			return err
		}
		resp = &protocol.FailureResponse{Round: w.Round}
		var state string
		if err := q.row(qRoundState, w.CampaignID, w.Round).Scan(&state); err != nil {
			return err
		}
		if state == store.RoundClosed {
			return nil
		}
		ci, err := s.infoByID(ctx, w.CampaignID)
		if err != nil {
			return err
		}
		var issues int
		if err := q.row(qSlotIssues, w.CampaignID, w.Round, w.Slot).Scan(&issues); err != nil {
			return err
		}
		resp.Reissued = issues < ci.spec.MaxAttempts
		return nil
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, fmt.Errorf("failure report of work unit %d: %w", wuID, err)
	}
	if outErr != nil {
		return nil, outErr
	}
	if !resp.Replayed {
		s.cfg.Counters.Result(store.OutcomeFailed)
		s.log.Warn("work unit failed", "wu", wuID, "host", hostID, "campaign", w.CampaignID, "round", w.Round, "reason", reason,
			"reissued", resp.Reissued)
	}
	return resp, nil
}
