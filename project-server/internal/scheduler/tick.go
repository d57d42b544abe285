package scheduler

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Tick does the time-driven transitions: work units past their deadline become expired
// (their slots can be reissued) and running rounds past their round deadline are marked
// stuck, with the reason on the campaign and in the log. A stuck round still accepts
// results and closes when it reaches its quorum. It also finishes round closes whose
// first attempt failed (see markClosed).
func (s *Scheduler) Tick(ctx context.Context) error {
	now := s.now()
	db := s.db.WithContext(ctx)
	if err := db.Model(&store.WorkUnit{}).Where("state = ? AND deadline <= ?", store.WUIssued, now).
		Update("state", store.WUExpired).Error; err != nil {
		return fmt.Errorf("tick: expire work units: %w", err)
	}
	var rs []store.Round
	if err := db.Raw(`SELECT r.* FROM rounds r JOIN campaigns c ON c.id = r.campaign_id
		WHERE r.state = ? AND r.deadline <= ? AND c.state = ? AND c.round = r.round`,
		store.RoundOpen, now, protocol.StateRunning).Scan(&rs).Error; err != nil {
		return fmt.Errorf("tick: rounds: %w", err)
	}
	for _, r := range rs {
		msg := fmt.Sprintf("round %d is stuck: %d of %d needed results accepted by its deadline %s (%d issues, %d invalid, %d failed)",
			r.Round, r.Accepted, r.Needed, r.Deadline.Format(time.RFC3339), r.Issued, r.Invalid, r.Failed)
		err := s.tx(ctx, func(tx *gorm.DB) error {
			res := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ? AND state = ?", r.CampaignID, r.Round, store.RoundOpen).
				Update("state", store.RoundStuck)
			if res.Error != nil || res.RowsAffected == 0 {
				return res.Error
			}
			return tx.Model(&store.Campaign{}).Where("id = ?", r.CampaignID).Updates(map[string]any{"message": msg, "updated_at": now}).Error
		})
		if err != nil {
			return fmt.Errorf("tick: mark round stuck: %w", err)
		}
		s.log.Warn("round stuck", "campaign", r.CampaignID, "round", r.Round, "accepted", r.Accepted, "needed", r.Needed)
	}
	if err := s.finishPending(ctx); err != nil {
		return fmt.Errorf("tick: finish round closes: %w", err)
	}
	return nil
}

// Run calls Tick every interval until ctx ends.
func (s *Scheduler) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("scheduler tick", "err", err)
			}
		}
	}
}

// Recover runs once at start, before serving: it prepares the hot statements, closes
// any round that holds its quorum but is still open, finishes the round closes a
// killed process left, and removes blobs no row needs (temporaries of uploads whose
// transaction never committed, deltas already merged, late deltas).
func (s *Scheduler) Recover(ctx context.Context) error {
	if err := s.Prepare(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	var rs []store.Round
	if err := s.db.WithContext(ctx).Where("state <> ? AND accepted >= needed", store.RoundClosed).Find(&rs).Error; err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, r0 := range rs {
		err := s.tx(ctx, func(tx *gorm.DB) error {
			ci, err := s.infoByID(ctx, r0.CampaignID)
			if err != nil {
				return err
			}
			r, err := s.lockRound(tx, r0.CampaignID, r0.Round)
			if err != nil || r.State == store.RoundClosed || r.Accepted < r.Needed {
				return err
			}
			return s.markClosed(s.raw(tx), ci, r.CampaignID, r.Round, s.now())
		})
		if err != nil {
			return fmt.Errorf("recover: close round %d of campaign %d: %w", r0.Round, r0.CampaignID, err)
		}
	}
	if err := s.finishPending(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	names, err := s.blobs.List()
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	keep := map[string]bool{}
	var models []string
	if err := s.db.WithContext(ctx).Model(&store.ModelVersion{}).Pluck("sha256", &models).Error; err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	var deltas []string
	if err := s.db.WithContext(ctx).Raw(`SELECT r.sha256 FROM results r JOIN rounds o ON o.campaign_id = r.campaign_id AND o.round = r.buffer_round
		WHERE r.outcome = ? AND (o.state <> ? OR o.result_model = '') AND COALESCE(length(r.data), 0) = 0`, protocol.OutcomeAccepted, store.RoundClosed).Scan(&deltas).Error; err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	var states []string
	if err := s.db.WithContext(ctx).Model(&store.Round{}).Where("opt_state <> ''").Pluck("opt_state", &states).Error; err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	deltas = append(deltas, states...)
	for _, n := range append(models, deltas...) {
		keep[n] = true
	}
	removed := 0
	for _, n := range names {
		if !keep[n] {
			if err := s.blobs.Remove(n); err == nil {
				removed++
			}
		}
	}
	// Every blob a row names must exist: a missing one means the data directory and the
	// database do not belong together.
	for n := range keep {
		if !s.blobs.Has(n) {
			return fmt.Errorf("recover: blob %s named by the database is missing from the data directory", n)
		}
	}
	s.log.Info("recovered", "rounds_closed", len(rs), "blobs_removed", removed, "blobs_kept", len(keep))
	return nil
}
