package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"gorm.io/gorm"

	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// RequestWork gives the host one work unit of a running campaign, or tells it when to
// ask again. A host that already holds a live work unit of the current round gets that
// same unit back, so a client that lost its answer loses nothing.
func (s *Scheduler) RequestWork(ctx context.Context, hostID int64, req *protocol.WorkRequest) (*protocol.WorkResponse, error) {
	if req.Threads < 0 || req.FreeMemoryBytes < 0 || req.FreeDiskBytes < 0 || req.GFLOPS < 0 || req.GFLOPS > 1e7 || math.IsNaN(req.GFLOPS) {
		return nil, fail(protocol.CodeBadRequest, "threads, free_memory_bytes, free_disk_bytes and gflops must be non-negative")
	}
	var campaigns []store.Campaign
	if err := s.db.WithContext(ctx).Where("state = ?", protocol.StateRunning).Order("id").Find(&campaigns).Error; err != nil {
		return nil, fmt.Errorf("request work: %w", err)
	}
	var wu *protocol.WorkUnit
	for i := range campaigns {
		c := &campaigns[i]
		ci, err := s.info(c)
		if err != nil {
			return nil, err
		}
		if req.FreeDiskBytes > 0 && req.FreeDiskBytes < 2*ci.deltaMax {
			continue
		}
		err = s.tx(ctx, func(tx *gorm.DB) error {
			var err error
			wu, err = s.issue(tx, hostID, c.ID, ci, req)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("request work: campaign %d: %w", c.ID, err)
		}
		if wu != nil {
			s.cfg.Counters.Issued()
			return &protocol.WorkResponse{WorkUnit: wu}, nil
		}
	}
	msg := "no work: no campaign is running"
	if len(campaigns) > 0 {
		msg = "no work: every work unit of the running rounds is out; ask again later"
	}
	return &protocol.WorkResponse{RetryAfterSeconds: int(s.cfg.RetryAfter / time.Second), Message: msg}, nil
}

// issue picks a slot of the campaign's current round for the host, inside tx.
func (s *Scheduler) issue(tx *gorm.DB, hostID, campaignID int64, ci *campaignInfo, req *protocol.WorkRequest) (*protocol.WorkUnit, error) {
	now := s.now()
	var c store.Campaign
	if err := tx.Take(&c, campaignID).Error; err != nil {
		return nil, err
	}
	if c.State != protocol.StateRunning {
		return nil, nil
	}
	r, err := s.lockRound(tx, c.ID, c.Round)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if r.State == store.RoundClosed {
		return nil, nil
	}
	hostUp := map[string]any{"last_contact": now}
	if req.GFLOPS > 0 {
		hostUp["gflops"] = req.GFLOPS
	}
	if err := tx.Model(&store.Host{}).Where("id = ?", hostID).Updates(hostUp).Error; err != nil {
		return nil, err
	}
	// A live unit of this round held by this host is answered again.
	var held store.WorkUnit
	err = tx.Where("campaign_id = ? AND round = ? AND host_id = ? AND state = ?", c.ID, c.Round, hostID, store.WUIssued).Take(&held).Error
	if err == nil && held.Deadline.After(now) {
		return s.describe(tx, &c, ci, r, &held), nil
	}
	if err != nil && !errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, err
	}
	if err := tx.Model(&store.WorkUnit{}).Where("campaign_id = ? AND round = ? AND state = ? AND deadline <= ?",
		c.ID, c.Round, store.WUIssued, now).Update("state", store.WUExpired).Error; err != nil {
		return nil, err
	}
	slot, attempt := -1, 0
	if r.NextSlot < r.Slots {
		slot = r.NextSlot
		if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", c.ID, c.Round).
			Update("next_slot", r.NextSlot+1).Error; err != nil {
			return nil, err
		}
	} else {
		// Reissue: a slot with no live or accepted unit, fewer than MaxAttempts issues,
		// none of them to this host.
		var rows []struct {
			Slot     int
			Attempts int
		}
		err := tx.Raw(`SELECT slot, COUNT(*) AS attempts FROM work_units WHERE campaign_id = ? AND round = ?
			GROUP BY slot
			HAVING SUM(CASE WHEN state IN (?, ?) THEN 1 ELSE 0 END) = 0 AND COUNT(*) < ?
			   AND SUM(CASE WHEN host_id = ? THEN 1 ELSE 0 END) = 0
			ORDER BY slot LIMIT 1`,
			c.ID, c.Round, store.WUIssued, store.WUAccepted, ci.spec.MaxAttempts, hostID).Scan(&rows).Error
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 {
			return nil, nil
		}
		slot, attempt = rows[0].Slot, rows[0].Attempts
	}
	count, err := s.fragmentCount(tx, ci, hostID, now)
	if err != nil {
		return nil, err
	}
	w := store.WorkUnit{CampaignID: c.ID, Round: c.Round, Slot: slot, Attempt: attempt, HostID: hostID,
		Seed: int64(wuSeed(ci.spec.Seed, c.Round, slot)), FragmentCount: count,
		FLOPs: int64(count) * int64(ci.spec.Hyper.Epochs) * 3 * ci.resolved.FLOPs,
		State: store.WUIssued, IssuedAt: now, Deadline: now.Add(time.Duration(ci.spec.WUDeadline))}
	if err := tx.Create(&w).Error; err != nil {
		return nil, err
	}
	if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", c.ID, c.Round).
		Update("issued", gorm.Expr("issued + 1")).Error; err != nil {
		return nil, err
	}
	return s.describe(tx, &c, ci, r, &w), nil
}

// fragmentCount scales the campaign's fragment range by the host's speed relative to
// the fastest recently active host: the fastest get FragmentsMax, a host a tenth as fast
// gets a tenth of the range above FragmentsMin. Hosts that report no speed get the
// minimum.
func (s *Scheduler) fragmentCount(tx *gorm.DB, ci *campaignInfo, hostID int64, now time.Time) (int, error) {
	lo, hi := ci.spec.FragmentsMin, ci.spec.FragmentsMax
	if lo == hi {
		return lo, nil
	}
	var h store.Host
	if err := tx.Select("gflops").Take(&h, hostID).Error; err != nil {
		return 0, err
	}
	if h.GFLOPS <= 0 {
		return lo, nil
	}
	var fastest float64
	if err := tx.Model(&store.Host{}).Where("last_contact >= ? AND detached = ?", now.Add(-s.cfg.ActiveWindow), false).
		Select("COALESCE(MAX(gflops), 0)").Scan(&fastest).Error; err != nil {
		return 0, err
	}
	if fastest <= h.GFLOPS {
		return hi, nil
	}
	return lo + int(math.Round(float64(hi-lo)*h.GFLOPS/fastest)), nil
}

func (s *Scheduler) describe(tx *gorm.DB, c *store.Campaign, ci *campaignInfo, r *store.Round, w *store.WorkUnit) *protocol.WorkUnit {
	var size int64
	var mv store.ModelVersion
	if err := tx.Select("size").Where("sha256 = ?", r.BaseModel).Take(&mv).Error; err == nil {
		size = mv.Size
	}
	ftp := s.cfg.FTP
	ftp.Name = ci.spec.Dataset
	ftp.ManifestVersion = c.ManifestVersion
	return &protocol.WorkUnit{
		ID: w.ID, CampaignID: c.ID, Round: w.Round,
		BaseModel:    protocol.BlobRef{SHA256: r.BaseModel, Size: size, URL: protocol.BlobPath(r.BaseModel)},
		ModelSpec:    ci.modelSpec,
		Classes:      ci.classes,
		Dataset:      ftp,
		FragmentSize: ci.spec.FragmentSize, FragmentCount: w.FragmentCount, Seed: uint64(w.Seed),
		Hyper: ci.spec.Hyper, DeltaDType: ci.spec.DeltaDType, Deadline: w.Deadline, FLOPs: w.FLOPs,
	}
}

// Heartbeat records a host's progress on its work unit and says whether to go on.
func (s *Scheduler) Heartbeat(ctx context.Context, hostID, wuID int64, req *protocol.HeartbeatRequest) (*protocol.HeartbeatResponse, error) {
	if math.IsNaN(req.Progress) || req.Progress < 0 || req.Progress > 1 || req.Epoch < 0 {
		return nil, fail(protocol.CodeBadRequest, "progress must be in 0..1 and epoch non-negative")
	}
	var resp *protocol.HeartbeatResponse
	err := s.tx(ctx, func(tx *gorm.DB) error {
		w, err := s.ownWU(tx, hostID, wuID)
		if err != nil {
			return err
		}
		resp = &protocol.HeartbeatResponse{Deadline: w.Deadline}
		var c store.Campaign
		if err := tx.Select("id", "state", "round").Take(&c, w.CampaignID).Error; err != nil {
			return err
		}
		switch {
		case c.State == protocol.StateStopped || w.State == store.WUAborted:
			resp.Abort, resp.Reason = true, "campaign_stopped"
		case c.Round != w.Round || w.State == store.WUClosed || w.State == store.WULate:
			resp.Abort, resp.Reason = true, "round_closed"
		case w.State == store.WUAccepted:
			resp.Abort, resp.Reason = true, "round_closed"
		}
		if resp.Abort {
			return nil
		}
		now := s.now()
		if err := tx.Model(&store.WorkUnit{}).Where("id = ?", w.ID).Update("progress", req.Progress).Error; err != nil {
			return err
		}
		return tx.Model(&store.Host{}).Where("id = ?", hostID).Update("last_contact", now).Error
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, fmt.Errorf("heartbeat %d: %w", wuID, err)
	}
	return resp, nil
}

// ownWU loads a work unit and checks that the host holds it.
func (s *Scheduler) ownWU(tx *gorm.DB, hostID, wuID int64) (*store.WorkUnit, error) {
	var w store.WorkUnit
	if err := tx.Take(&w, wuID).Error; err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return nil, fail(protocol.CodeNotFound, "work unit %d does not exist", wuID)
		}
		return nil, err
	}
	if w.HostID != hostID {
		return nil, fail(protocol.CodeForbidden, "work unit %d belongs to another host", wuID)
	}
	return &w, nil
}
