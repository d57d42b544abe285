package scheduler

import (
	"context"
	"database/sql"
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
// same unit back, so a client that lost its answer loses nothing. clientVersion is the
// protocol version the host speaks: a host older than protocol.AsyncVersion gets work of
// synchronous campaigns only, whose answers it knows.
func (s *Scheduler) RequestWork(ctx context.Context, hostID int64, clientVersion int, req *protocol.WorkRequest) (*protocol.WorkResponse, error) {
	if req.Threads < 0 || req.FreeMemoryBytes < 0 || req.FreeDiskBytes < 0 || req.GFLOPS < 0 || req.GFLOPS > 1e7 || math.IsNaN(req.GFLOPS) {
		return nil, fail(protocol.CodeBadRequest, "threads, free_memory_bytes, free_disk_bytes and gflops must be non-negative")
	}
	if err := s.touch(ctx, hostID, req.GFLOPS); err != nil {
		return nil, fmt.Errorf("request work: %w", err)
	}
	campaigns, err := s.running(ctx)
	if err != nil {
		return nil, fmt.Errorf("request work: %w", err)
	}
	for i := range campaigns {
		c := &campaigns[i]
		ci, err := s.infoByID(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		if req.FreeDiskBytes > 0 && req.FreeDiskBytes < 2*ci.deltaMax {
			continue
		}
		if clientVersion < protocol.AsyncVersion && ci.mode.KeepsUnits() {
			continue
		}
		wu, err := s.issue(ctx, hostID, c, ci)
		if err != nil {
			return nil, fmt.Errorf("request work: campaign %d: %w", c.ID, err)
		}
		if wu != nil {
			return &protocol.WorkResponse{WorkUnit: wu}, nil
		}
	}
	msg := "no work: no campaign is running"
	wait := s.cfg.RetryAfter
	if len(campaigns) > 0 {
		msg = "no work: every work unit of the running rounds is out; ask again later"
		wait = s.retryHint(ctx, campaigns)
	}
	return &protocol.WorkResponse{RetryAfterSeconds: max(1, int(wait/time.Second)), Message: msg}, nil
}

// qRunning lists the running campaigns with what issuing needs of them. States are
// literals, not parameters: SQLite recompiles a statement whenever a parameter that
// could select a partial index is bound again.
const qRunning = `SELECT id, round, manifest_version FROM campaigns WHERE state = '` + protocol.StateRunning + `' ORDER BY id`

// runningTTL bounds how long the list of running campaigns is reused even when no
// change was signalled.
const runningTTL = time.Second

// running returns the running campaigns, oldest first, with only ID, Round and
// ManifestVersion filled: the rest of a campaign is in its cached campaignInfo. The list
// is reused until campaignsChanged is called (or runningTTL passes); callers must not
// modify it.
func (s *Scheduler) running(ctx context.Context) ([]store.Campaign, error) {
	s.campMu.Lock()
	if s.campOK && s.campListGen == s.campGen && time.Since(s.campAt) < runningTTL {
		list := s.campList
		s.campMu.Unlock()
		return list, nil
	}
	gen := s.campGen
	s.campMu.Unlock()
	rows, err := s.raw(s.read(ctx)).rows(qRunning)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Campaign
	for rows.Next() {
		var c store.Campaign
		if err := rows.Scan(&c.ID, &c.Round, &c.ManifestVersion); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	s.campMu.Lock()
	if gen == s.campGen {
		s.campList, s.campListGen, s.campAt, s.campOK = out, gen, time.Now(), true
	}
	s.campMu.Unlock()
	return out, nil
}

// campaignsChanged drops the cached list of running campaigns. Every commit that
// changes a campaign's state or round calls it.
func (s *Scheduler) campaignsChanged() {
	s.campMu.Lock()
	s.campGen++
	s.campMu.Unlock()
}

// retryHint says how long a host without work should wait when every unit of the
// running rounds is out: a quarter of the previous round's duration (half the current
// round's age for a first round), between one second and RetryAfter. Short rounds call
// hosts back soon, so a host that found the round full joins the next one.
func (s *Scheduler) retryHint(ctx context.Context, campaigns []store.Campaign) time.Duration {
	now := s.now()
	best := s.cfg.RetryAfter
	for _, c := range campaigns {
		h, ok := s.hintBasis(ctx, c.ID, c.Round)
		if !ok {
			continue
		}
		d := h.prev / 4
		if h.prev == 0 {
			d = now.Sub(h.opened) / 2
		}
		best = min(best, max(time.Second, d))
	}
	return best
}

// roundTiming is what retryHint needs of a round: when it opened and how long the one
// before it lasted (zero for round 0). It never changes, so it is cached per round.
type roundTiming struct {
	round  int
	opened time.Time
	prev   time.Duration
}

func (s *Scheduler) hintBasis(ctx context.Context, campaignID int64, round int) (roundTiming, bool) {
	s.mu.RLock()
	h, ok := s.timing[campaignID]
	s.mu.RUnlock()
	if ok && h.round == round {
		return h, true
	}
	var rs []store.Round
	if err := s.read(ctx).Select("round", "opened_at", "closed_at").
		Where("campaign_id = ? AND round IN ?", campaignID, []int{round - 1, round}).Find(&rs).Error; err != nil {
		return roundTiming{}, false
	}
	h = roundTiming{round: round}
	found := false
	for _, r := range rs {
		if r.Round == round {
			h.opened, found = r.OpenedAt, true
		} else if r.ClosedAt != nil {
			h.prev = r.ClosedAt.Sub(r.OpenedAt)
		}
	}
	if !found {
		return roundTiming{}, false
	}
	s.mu.Lock()
	s.timing[campaignID] = h
	s.mu.Unlock()
	return h, true
}

// waitingHosts counts the hosts seen recently that hold no unit of the round: the
// slots left are kept for them before anyone gets a second one.
func (s *Scheduler) waitingHosts(ctx context.Context, campaignID int64, round int, now time.Time) (int64, error) {
	window := 2 * max(s.cfg.RetryAfter, touchEvery)
	var n int64
	err := s.raw(s.read(ctx)).row(qWaitingHosts, false, now.Add(-window), campaignID, round).Scan(&n)
	return n, err
}

const qWaitingHosts = `SELECT COUNT(*) FROM hosts WHERE detached = ? AND last_contact >= ?
	AND id NOT IN (SELECT host_id FROM work_units WHERE campaign_id = ? AND round = ?)`

// touchEvery is how stale a host's last_contact may get before a request rewrites it.
const touchEvery = 30 * time.Second

// touch records that a host called (and its fresh speed), writing only when the stored
// values are stale, so polling hosts do not cost a write each.
func (s *Scheduler) touch(ctx context.Context, hostID int64, gflops float64) error {
	now := s.now()
	s.mu.Lock()
	t, ok := s.touched[hostID]
	fresh := ok && now.Sub(t.at) < touchEvery && (gflops <= 0 || gflops == t.gflops)
	s.mu.Unlock()
	if fresh {
		return nil
	}
	up := map[string]any{"last_contact": now}
	if gflops > 0 {
		up["gflops"] = gflops
	}
	if err := s.db.WithContext(ctx).Model(&store.Host{}).Where("id = ?", hostID).Updates(up).Error; err != nil {
		return err
	}
	s.mu.Lock()
	known := gflops > 0 || t.known
	if gflops <= 0 {
		gflops = t.gflops
	}
	s.touched[hostID] = touchMark{at: now, gflops: gflops, known: known}
	s.mu.Unlock()
	return nil
}

// touchMark is what the scheduler remembers of a host between requests.
type touchMark struct {
	at     time.Time
	gflops float64
	known  bool // gflops is the stored value
}

// Queries of issue (states are literals, see qRunning). qRoundOfHost reads the round and the units the host holds in it
// in one statement (a round row per unit, or one with NULL unit columns).
const (
	qRoundOfHost = `SELECT r.state, r.base_model, r.slots, r.next_slot, w.id, w.state, w.deadline, w.seed, w.fragment_count, w.flops
		FROM rounds r LEFT JOIN work_units w ON w.campaign_id = r.campaign_id AND w.round = r.round AND w.host_id = ?
		WHERE r.campaign_id = ? AND r.round = ?`
	qReissuable = `SELECT COUNT(*) FROM (SELECT 1 FROM work_units WHERE campaign_id = ? AND round = ?
		AND (state IN ('` + store.WUExpired + `', '` + store.WUAborted + `', '` + store.WUFailed + `', '` + store.WUDuplicate + `', '` + store.WUOverLimit + `') OR (state = '` + store.WUIssued + `' AND deadline <= ?)) LIMIT 1) AS x`
)

var (
	qReissuableTx = txQuery(qReissuable)
	qClaimSlot    = txQuery(`UPDATE rounds SET next_slot = next_slot + 1, issued = issued + 1
		WHERE campaign_id = ? AND round = ? AND state <> '` + store.RoundClosed + `' AND next_slot < slots RETURNING next_slot`)
	qInsertWU = txQuery(`INSERT INTO work_units (campaign_id, round, slot, attempt, host_id, seed, fragment_count, flops, state,
		issued_at, deadline, progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) RETURNING id`)
)

// roundOfHost reads a round and the host's units in it; found is false when the
// round does not exist.
func (s *Scheduler) roundOfHost(ctx context.Context, campaignID int64, round int, hostID int64) (r store.Round, mine []store.WorkUnit, found bool, err error) {
	rows, err := s.raw(s.read(ctx)).rows(qRoundOfHost, hostID, campaignID, round)
	if err != nil {
		return r, nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, seed, flops sql.NullInt64
			count           sql.NullInt64
			state           sql.NullString
			deadline        sql.Null[time.Time]
		)
		if err := rows.Scan(&r.State, &r.BaseModel, &r.Slots, &r.NextSlot, &id, &state, &deadline, &seed, &count, &flops); err != nil {
			return r, nil, false, err
		}
		found = true
		if id.Valid {
			mine = append(mine, store.WorkUnit{ID: id.Int64, CampaignID: campaignID, Round: round, HostID: hostID,
				State: state.String, Deadline: deadline.V, Seed: seed.Int64, FragmentCount: int(count.Int64), FLOPs: flops.Int64})
		}
	}
	return r, mine, found, rows.Err()
}

// issue picks a slot of the campaign's current round for the host. Fresh slots are
// taken with one conditional UPDATE; only when every slot is out does it look for units
// past their deadline to reissue.
func (s *Scheduler) issue(ctx context.Context, hostID int64, c *store.Campaign, ci *campaignInfo) (*protocol.WorkUnit, error) {
	now := s.now()
	r, mine, found, err := s.roundOfHost(ctx, c.ID, c.Round, hostID)
	if err != nil || !found || r.State == store.RoundClosed {
		return nil, err
	}
	// A live unit of this round held by this host is answered again.
	for i := range mine {
		if mine[i].State == store.WUIssued && mine[i].Deadline.After(now) {
			return s.describe(ctx, c, ci, r.BaseModel, &mine[i]), nil
		}
	}
	if r.NextSlot >= r.Slots {
		// Every slot is out: a reissue needs a unit past its deadline, released by a
		// host that detached, reported failed, or whose result was not merged.
		var n int64
		if err := s.raw(s.read(ctx)).row(qReissuable, c.ID, c.Round, now).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
	}
	if full, err := s.accountFull(ctx, c, ci, hostID, now); err != nil || full {
		return nil, err
	}
	if len(mine) > 0 {
		// A second unit in one round goes to this host only if every other active host
		// that has none in this round can still get one.
		waiting, err := s.waitingHosts(ctx, c.ID, c.Round, now)
		if err != nil {
			return nil, err
		}
		if waiting > 0 && int64(r.Slots-r.NextSlot) <= waiting {
			return nil, nil
		}
	}
	count, err := s.fragmentCount(ctx, ci, hostID, now)
	if err != nil {
		return nil, err
	}
	var w *store.WorkUnit
	base := r.BaseModel
	err = s.tx(ctx, func(tx *gorm.DB) error {
		w = nil
		slot, attempt := -1, 0
		q := s.raw(tx)
		var next int
		err := q.row(qClaimSlot, c.ID, c.Round).Scan(&next)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err == nil {
			slot = next - 1
		} else {
			// Every slot went out since the round was read. Without a unit to reissue
			// there is nothing to do: check that first, cheaply, before locking.
			var n int64
			if err := q.row(qReissuableTx, c.ID, c.Round, now).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			lr, err := s.lockRound(tx, c.ID, c.Round)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if lr.State == store.RoundClosed {
				return nil
			}
			base = lr.BaseModel
			if err := tx.Model(&store.WorkUnit{}).Where("campaign_id = ? AND round = ? AND state = ? AND deadline <= ?",
				c.ID, c.Round, store.WUIssued, now).Update("state", store.WUExpired).Error; err != nil {
				return err
			}
			// A slot with no live or accepted unit, fewer than MaxAttempts issues, none
			// of them to this host.
			var rows []struct {
				Slot     int
				Attempts int
			}
			if err := tx.Raw(`SELECT slot, COUNT(*) AS attempts FROM work_units WHERE campaign_id = ? AND round = ?
				GROUP BY slot
				HAVING SUM(CASE WHEN state IN (?, ?) THEN 1 ELSE 0 END) = 0 AND COUNT(*) < ?
				   AND SUM(CASE WHEN host_id = ? THEN 1 ELSE 0 END) = 0
				ORDER BY slot LIMIT 1`,
				c.ID, c.Round, store.WUIssued, store.WUAccepted, ci.spec.MaxAttempts, hostID).Scan(&rows).Error; err != nil {
				return err
			}
			if len(rows) == 0 {
				return nil
			}
			slot, attempt = rows[0].Slot, rows[0].Attempts
			if err := tx.Model(&store.Round{}).Where("campaign_id = ? AND round = ?", c.ID, c.Round).
				Update("issued", gorm.Expr("issued + 1")).Error; err != nil {
				return err
			}
		}
		w = &store.WorkUnit{CampaignID: c.ID, Round: c.Round, Slot: slot, Attempt: attempt, HostID: hostID,
			Seed: int64(wuSeed(ci.spec.Seed, c.Round, slot)), FragmentCount: count,
			FLOPs: int64(count) * int64(ci.spec.Hyper.Epochs) * 3 * ci.resolved.FLOPs,
			State: store.WUIssued, IssuedAt: now, Deadline: now.Add(time.Duration(ci.spec.WUDeadline))}
		return q.row(qInsertWU, w.CampaignID, w.Round, w.Slot, w.Attempt, w.HostID, w.Seed, w.FragmentCount, w.FLOPs, w.State,
			w.IssuedAt, w.Deadline).Scan(&w.ID)
	})
	if err != nil || w == nil {
		return nil, err
	}
	s.cfg.Counters.Issued()
	return s.describe(ctx, c, ci, base, w), nil
}

// qAccountUnits counts the units of a round that the hosts of a host's account hold
// (live) or have had merged.
const qAccountUnits = `SELECT COUNT(*) FROM work_units w JOIN hosts h ON h.id = w.host_id
	WHERE w.campaign_id = ? AND w.round = ? AND h.account_id = (SELECT account_id FROM hosts WHERE id = ?)
	AND (w.state = '` + store.WUAccepted + `' OR (w.state = '` + store.WUIssued + `' AND w.deadline > ?))`

// accountFull reports whether the host's account already holds or has had merged as
// many units of the round as the campaign's MaxResultsPerAccount allows, so another
// one would be work the round cannot merge. Without a bound it costs nothing.
func (s *Scheduler) accountFull(ctx context.Context, c *store.Campaign, ci *campaignInfo, hostID int64, now time.Time) (bool, error) {
	limit := ci.spec.MaxResultsPerAccount
	if limit <= 0 {
		return false, nil
	}
	var n int
	if err := s.raw(s.read(ctx)).row(qAccountUnits, c.ID, c.Round, hostID, now).Scan(&n); err != nil {
		return false, err
	}
	return n >= limit, nil
}

// fragmentCount scales the campaign's fragment range by the host's speed relative to
// the fastest recently active host: the fastest get FragmentsMax, a host a tenth as fast
// gets a tenth of the range above FragmentsMin. Hosts that report no speed get the
// minimum.
func (s *Scheduler) fragmentCount(ctx context.Context, ci *campaignInfo, hostID int64, now time.Time) (int, error) {
	lo, hi := ci.spec.FragmentsMin, ci.spec.FragmentsMax
	if lo == hi {
		return lo, nil
	}
	s.mu.RLock()
	t, ok := s.touched[hostID]
	s.mu.RUnlock()
	var h store.Host
	if ok && t.known {
		h.GFLOPS = t.gflops
	} else {
		if err := s.read(ctx).Select("gflops").Take(&h, hostID).Error; err != nil {
			return 0, err
		}
		s.mu.Lock()
		if t, ok := s.touched[hostID]; ok {
			t.gflops, t.known = h.GFLOPS, true
			s.touched[hostID] = t
		}
		s.mu.Unlock()
	}
	if h.GFLOPS <= 0 {
		return lo, nil
	}
	s.mu.Lock()
	fastest, at := s.fastest, s.fastestAt
	s.mu.Unlock()
	if now.Sub(at) > fastestEvery || now.Before(at) || fastest < h.GFLOPS {
		if err := s.read(ctx).Model(&store.Host{}).Where("last_contact >= ? AND detached = ?", now.Add(-s.cfg.ActiveWindow), false).
			Select("COALESCE(MAX(gflops), 0)").Scan(&fastest).Error; err != nil {
			return 0, err
		}
		s.mu.Lock()
		s.fastest, s.fastestAt = fastest, now
		s.mu.Unlock()
	}
	if fastest <= h.GFLOPS {
		return hi, nil
	}
	return lo + int(math.Round(float64(hi-lo)*h.GFLOPS/fastest)), nil
}

// fastestEvery is how long the speed of the fastest active host is cached.
const fastestEvery = 5 * time.Second

func (s *Scheduler) describe(ctx context.Context, c *store.Campaign, ci *campaignInfo, base string, w *store.WorkUnit) *protocol.WorkUnit {
	ftp := s.cfg.FTP
	ftp.Name = ci.spec.Dataset
	ftp.ManifestVersion = c.ManifestVersion
	hyper := ci.spec.Hyper
	hyper.LearningRate = RoundLearningRate(hyper, w.Round)
	return &protocol.WorkUnit{
		ID: w.ID, CampaignID: c.ID, Kind: protocol.KindTrain, Round: w.Round,
		BaseModel:    protocol.BlobRef{SHA256: base, Size: s.modelSize(ctx, base), URL: protocol.BlobPath(base)},
		ModelSpec:    ci.modelSpec,
		Classes:      ci.classes,
		Dataset:      ftp,
		FragmentSize: ci.spec.FragmentSize, FragmentCount: w.FragmentCount, Seed: uint64(w.Seed),
		Hyper: hyper, DeltaDType: ci.spec.DeltaDType, Deadline: w.Deadline, FLOPs: w.FLOPs,
	}
}

// modelSize returns a model blob's size; model versions never change, so it is cached.
func (s *Scheduler) modelSize(ctx context.Context, sha string) int64 {
	s.mu.RLock()
	n, ok := s.sizes[sha]
	s.mu.RUnlock()
	if ok {
		return n
	}
	var mv store.ModelVersion
	if err := s.read(ctx).Select("size").Where("sha256 = ?", sha).Take(&mv).Error; err != nil {
		return 0
	}
	s.mu.Lock()
	s.sizes[sha] = mv.Size
	s.mu.Unlock()
	return mv.Size
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
		// A unit whose round closed is not aborted: its result is still answered late,
		// recorded and credited (issue 5), so the volunteer's work counts for it.
		switch {
		case c.State == protocol.StateStopped || w.State == store.WUAborted:
			resp.Abort, resp.Reason = true, "campaign_stopped"
		case w.State == store.WUAccepted || w.State == store.WULate || w.State == store.WUStale:
			resp.Abort, resp.Reason = true, "round_closed" // its result is already in
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
func (s *Scheduler) ownWU(db *gorm.DB, hostID, wuID int64) (*store.WorkUnit, error) {
	var w store.WorkUnit
	err := s.raw(db).row(qWorkUnit, wuID).Scan(&w.ID, &w.CampaignID, &w.Round, &w.Slot, &w.Attempt, &w.HostID, &w.Seed,
		&w.FragmentCount, &w.FLOPs, &w.State, &w.IssuedAt, &w.Deadline, &w.Progress, &w.FinishedAt)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fail(protocol.CodeNotFound, "work unit %d does not exist", wuID)
		}
		return nil, err
	}
	if w.HostID != hostID {
		return nil, fail(protocol.CodeForbidden, "work unit %d belongs to another host", wuID)
	}
	return &w, nil
}

var qWorkUnit = txQuery(`SELECT id, campaign_id, round, slot, attempt, host_id, seed, fragment_count, flops, state,
	issued_at, deadline, progress, finished_at FROM work_units WHERE id = ?`)
