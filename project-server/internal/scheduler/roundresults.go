package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// RoundResults lists every result and failure report of a campaign's round, oldest
// first, with the account of each host: what the researcher needs to see which
// results were merged, which were not and why, and which were flagged as copies.
func (s *Scheduler) RoundResults(ctx context.Context, campaignID int64, round int) ([]protocol.ResultInfo, error) {
	if _, err := s.getCampaign(ctx, campaignID); err != nil {
		return nil, err
	}
	if round < 0 {
		return nil, fail(protocol.CodeBadRequest, "round %d is negative", round)
	}
	var n int64
	if err := s.read(ctx).Table("rounds").Where("campaign_id = ? AND round = ?", campaignID, round).Count(&n).Error; err != nil {
		return nil, fmt.Errorf("results of round %d of campaign %d: %w", round, campaignID, err)
	}
	if n == 0 {
		return nil, fail(protocol.CodeNotFound, "campaign %d has no round %d", campaignID, round)
	}
	var rows []struct {
		ID, WorkUnit      int64
		Slot              int
		HostID, AccountID int64
		Outcome           string
		SHA256            string `gorm:"column:sha256"`
		Size, Samples     int64
		Loss, Norm        float64
		Credit            float64
		Reason, Flag      string
		CreatedAt         time.Time
	}
	err := s.read(ctx).Raw(`SELECT r.id, r.work_unit_id AS work_unit, w.slot, r.host_id, h.account_id, r.outcome, r.sha256, r.size,
		r.samples, r.loss, r.norm, r.credit, r.reason, r.flag, r.created_at
		FROM results r JOIN work_units w ON w.id = r.work_unit_id JOIN hosts h ON h.id = r.host_id
		WHERE r.campaign_id = ? AND r.round = ? ORDER BY r.id`, campaignID, round).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("results of round %d of campaign %d: %w", round, campaignID, err)
	}
	out := make([]protocol.ResultInfo, len(rows))
	for i, r := range rows {
		out[i] = protocol.ResultInfo{ID: r.ID, WorkUnit: r.WorkUnit, Slot: r.Slot, HostID: r.HostID, AccountID: r.AccountID,
			Outcome: r.Outcome, SHA256: r.SHA256, Size: r.Size, Samples: r.Samples, Loss: r.Loss, Norm: r.Norm, Credit: r.Credit,
			Reason: r.Reason, Flag: r.Flag, CreatedAt: r.CreatedAt}
	}
	return out, nil
}
