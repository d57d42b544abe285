// Package agent is the volunteer-client's compute loop: ask for work, fetch the base
// model, train batch by batch under the volunteer's preferences (pause, CPU limit,
// idle-only, time window), checkpoint, heartbeat, and upload the delta exactly once.
//
// Order of business on every turn of the loop: a finished delta waiting for upload
// comes first, then an unfinished work unit (resumed from its checkpoint), then new
// work. A work unit whose training diverges (a NaN or infinite loss or delta) is
// reported to the server as failed and dropped. Everything that must survive a crash is on disk (package checkpoint) before
// the agent acts on it, so the loop can be killed at any instruction.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/backoff"
	"github.com/texgrid/texgrid/volunteer-client/internal/checkpoint"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/internal/sysinfo"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// errDropped ends a work unit the server no longer wants; its files are gone.
var errDropped = errors.New("work unit dropped")

// ErrAborted is the cause of a work unit stopped by the server.
var ErrAborted = errors.New("work unit aborted by the server")

// Config wires an Agent. Zero durations take production values.
type Config struct {
	Dir      *state.Dir
	API      *apiclient.Client
	Identity state.Identity
	Prefs    *prefs.Store
	Trainer  Trainer
	Idle     idle.Detector // nil: idle.System
	Logger   *slog.Logger
	Version  string
	GFLOPS   float64

	// OnProgress, when set, hears every status change of the current work unit (the
	// terminal progress bar).
	OnProgress func(localapi.WorkUnit)
	// MaxResults stops Run after this many work units ended with an answered upload
	// or failure report (0: run forever).
	MaxResults int

	Now       func() time.Time // clock for the time window; default time.Now
	RetryBase time.Duration    // first backoff ceiling; default 1s
	Poll      time.Duration    // how often idleness is checked and a waiting agent rechecks; default 10s
	// HostPoll is how often the host's record (credit, results) is read from the
	// server besides after every upload; default 5 minutes.
	HostPoll time.Duration
}

// Agent runs the loop. Its exported methods are safe for concurrent use by the local API.
type Agent struct {
	cfg  Config
	work *checkpoint.Store
	log  *slog.Logger

	mu      sync.Mutex
	st      localapi.Status
	paused  bool
	wake    chan struct{} // closed and replaced on pause/resume
	results int
	changed chan struct{} // closed and replaced whenever st.Seq goes up
	snooze  *time.Timer   // ends a timed pause; nil when none
	hostNow chan struct{} // asks the host-record reader to read now (after uploads)
	metrics *metrics

	// The last idle answer; only the Run goroutine touches these.
	idleAt  time.Time
	idleOK  bool
	idleWhy string
}

// New checks cfg and opens the work directory.
func New(cfg Config) (*Agent, error) {
	if cfg.Dir == nil || cfg.API == nil || cfg.Prefs == nil || cfg.Trainer == nil {
		return nil, errors.New("agent: Dir, API, Prefs and Trainer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Idle == nil {
		cfg.Idle = &idle.System{Cores: runtime.NumCPU()}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.HostPoll <= 0 {
		cfg.HostPoll = 5 * time.Minute
	}
	work, err := checkpoint.Open(cfg.Dir.File(state.WorkDir))
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, work: work, log: cfg.Logger, wake: make(chan struct{}), changed: make(chan struct{}), hostNow: make(chan struct{}, 1), metrics: newMetrics()}
	a.st = localapi.Status{APIVersion: localapi.Version, Seq: 1, State: localapi.StateIdle, Server: cfg.Identity.Server, HostID: cfg.Identity.HostID, ClientVersion: cfg.Version}
	return a, nil
}

// Status returns a snapshot for the local API.
func (a *Agent) Status() localapi.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snapshotLocked()
}

func (a *Agent) snapshotLocked() localapi.Status {
	s := a.st
	if s.WorkUnit != nil {
		wu := *s.WorkUnit
		s.WorkUnit = &wu
	}
	if s.Host != nil {
		h := *s.Host
		s.Host = &h
	}
	s.Prefs = a.cfg.Prefs.Get()
	return s
}

// WaitChange returns the Status once its Seq is above after, or the current Status
// when ctx ends first.
func (a *Agent) WaitChange(ctx context.Context, after uint64) localapi.Status {
	for {
		a.mu.Lock()
		if a.st.Seq > after {
			s := a.snapshotLocked()
			a.mu.Unlock()
			return s
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return a.Status()
		case <-ch:
		}
	}
}

// Touch marks the Status as changed without changing it (the preferences it shows
// changed through the local API).
func (a *Agent) Touch() { a.update(func(*localapi.Status) {}) }

// touchLocked raises Seq and wakes WaitChange callers; a.mu is held.
func (a *Agent) touchLocked() {
	a.st.Seq++
	close(a.changed)
	a.changed = make(chan struct{})
}

// Pause stops computing after the current batch; the work unit stays checkpointed.
func (a *Agent) Pause() { a.setPaused(true, 0) }

// PauseFor pauses like Pause and resumes by itself after d (snooze). A later Pause,
// PauseFor or Resume replaces the timer.
func (a *Agent) PauseFor(d time.Duration) { a.setPaused(true, d) }

// Resume undoes Pause and PauseFor.
func (a *Agent) Resume() { a.setPaused(false, 0) }

func (a *Agent) setPaused(p bool, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.snooze != nil {
		a.snooze.Stop()
		a.snooze = nil
	}
	a.st.PausedUntil = nil
	if p && d > 0 {
		until := a.cfg.Now().Add(d)
		a.st.PausedUntil = &until
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			a.mu.Lock()
			mine := a.snooze == t
			a.mu.Unlock()
			if mine {
				a.log.Info("snooze over: resuming")
				a.Resume()
			}
		})
		a.snooze = t
	}
	if a.paused != p {
		a.paused = p
		close(a.wake)
		a.wake = make(chan struct{})
	}
	if p {
		a.st.State, a.st.Reason = localapi.StatePaused, pausedReason(a.st.PausedUntil)
	} else if a.st.State == localapi.StatePaused {
		// The loop sets the next state at its next turn; until then say so.
		a.st.State, a.st.Reason = localapi.StateIdle, "resuming"
	}
	a.touchLocked()
}

func pausedReason(until *time.Time) string {
	if until != nil {
		return "snoozed until " + until.Format("15:04")
	}
	return "paused by the volunteer"
}

func (a *Agent) update(f func(s *localapi.Status)) {
	a.mu.Lock()
	f(&a.st)
	a.touchLocked()
	var wu *localapi.WorkUnit
	if a.st.WorkUnit != nil {
		c := *a.st.WorkUnit
		wu = &c
	}
	a.mu.Unlock()
	if wu != nil && a.cfg.OnProgress != nil {
		a.cfg.OnProgress(*wu)
	}
}

func (a *Agent) setState(state, reason string) {
	a.update(func(s *localapi.Status) { s.State, s.Reason = state, reason })
}

func (a *Agent) fail(err error) {
	a.log.Error("volunteer-client", "err", err)
	a.metrics.errors.WithLabelValues("failed").Inc()
	now := a.cfg.Now()
	a.update(func(s *localapi.Status) { s.LastError, s.LastErrorAt = err.Error(), &now })
}

// Run loops until ctx ends (it then checkpoints and returns nil), MaxResults work
// units were answered, or a failure no retry can fix (unauthorized host, unusable state
// directory).
func (a *Agent) Run(ctx context.Context) error {
	hctx, stopHost := context.WithCancel(ctx)
	var hwg sync.WaitGroup
	hwg.Add(1)
	go func() {
		defer hwg.Done()
		a.hostRecords(hctx)
	}()
	defer hwg.Wait()
	defer stopHost()
	for ctx.Err() == nil {
		if a.cfg.MaxResults > 0 && a.resultsDone() >= a.cfg.MaxResults {
			return nil
		}
		if err := a.turn(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, apiclient.ErrUnauthorized) || errors.Is(err, apiclient.ErrUpgrade) {
				return err
			}
			a.fail(err)
			// A failed turn (disk full, trainer error) waits before the next one, so a
			// persistent fault does not spin.
			if backoff.Sleep(ctx, a.policy().Delay(3)) != nil {
				break
			}
		}
	}
	a.setState(localapi.StateIdle, "stopped")
	return nil
}

func (a *Agent) resultsDone() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.results
}

func (a *Agent) policy() backoff.Policy {
	return backoff.Policy{Base: a.cfg.RetryBase, Max: time.Duration(a.cfg.Prefs.Get().MaxRetryDelaySecs) * time.Second}
}

// retry runs op with the agent's backoff, showing waits in the status.
func (a *Agent) retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	err := backoff.Retry(ctx, a.policy(), func(ctx context.Context) error {
		return apiclient.ForRetry(op(ctx))
	}, func(err error, wait time.Duration) {
		a.log.Warn("retrying", "what", what, "err", err, "wait", wait.Round(time.Millisecond))
		a.metrics.errors.WithLabelValues("retried").Inc()
		now := a.cfg.Now()
		a.update(func(s *localapi.Status) {
			s.LastError, s.LastErrorAt = fmt.Sprintf("%s: %v (retrying in %s)", what, err, wait.Round(time.Second)), &now
			if apiclient.Retryable(err) {
				s.ServerError = fmt.Sprintf("%s: %v", what, err)
			}
		})
	})
	if err == nil {
		a.serverOK()
	}
	return err
}

// serverOK clears ServerError after a call to the server succeeded.
func (a *Agent) serverOK() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.ServerError != "" {
		a.st.ServerError = ""
		a.touchLocked()
	}
}

// hostRecords reads the host's record from the server every HostPoll and after every
// upload, until ctx ends. A failure keeps the last record.
func (a *Agent) hostRecords(ctx context.Context) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		h, err := a.cfg.API.HostInfo(rctx)
		cancel()
		switch {
		case err == nil:
			now := a.cfg.Now()
			a.update(func(s *localapi.Status) {
				s.Host = &localapi.Host{Credit: h.Credit, ResultsValid: h.ResultsValid, ResultsInvalid: h.ResultsInvalid, ErrorRate: h.ErrorRate, FetchedAt: now}
			})
		case ctx.Err() == nil:
			a.log.Debug("host record", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.hostNow:
		case <-time.After(a.cfg.HostPoll):
		}
	}
}

func (a *Agent) turn(ctx context.Context) error {
	r, delta, err := a.work.LoadResult()
	if errors.Is(err, checkpoint.ErrCorrupt) {
		a.fail(err)
		return a.work.Clear()
	}
	if err != nil {
		return err
	}
	if r != nil {
		return a.upload(ctx, r, delta)
	}
	d, err := a.work.LoadDescriptor()
	if errors.Is(err, checkpoint.ErrCorrupt) {
		a.fail(err)
		return a.work.Clear()
	}
	if err != nil {
		return err
	}
	if d == nil {
		if err := a.gate(ctx); err != nil {
			return err
		}
		if d, err = a.fetchWork(ctx); err != nil || d == nil {
			return err
		}
	}
	return a.runWorkUnit(ctx, d)
}

// gate blocks while the volunteer's preferences say not to compute: paused, outside
// the time window, or (with run-only-when-idle) the machine in use.
func (a *Agent) gate(ctx context.Context) error {
	for {
		a.mu.Lock()
		paused, wake, until := a.paused, a.wake, a.st.PausedUntil
		a.mu.Unlock()
		p := a.cfg.Prefs.Get()
		state, reason := "", ""
		if paused {
			state, reason = localapi.StatePaused, pausedReason(until)
		} else if w, err := localapi.ParseWindow(p.TimeWindow); err == nil && !w.Contains(a.cfg.Now()) {
			state, reason = localapi.StateWaiting, fmt.Sprintf("outside the time window %s", p.TimeWindow)
		} else if p.RunOnlyWhenIdle {
			if ok, why := a.idle(ctx, p); !ok {
				state, reason = localapi.StateWaiting, why
			}
		}
		if state == "" {
			return nil
		}
		a.setState(state, reason)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-a.cfg.Prefs.Changed():
		case <-time.After(a.cfg.Poll):
		}
	}
}

// idle asks the detector at most once per Poll interval: the gate runs between
// batches, and the detector may start processes (loginctl, xprintidle).
func (a *Agent) idle(ctx context.Context, p localapi.Prefs) (bool, string) {
	now := time.Now()
	if !a.idleAt.IsZero() && now.Sub(a.idleAt) < a.cfg.Poll {
		return a.idleOK, a.idleWhy
	}
	a.idleOK, a.idleWhy = a.cfg.Idle.Idle(ctx, time.Duration(p.IdleMinutes)*time.Minute, p.IdleMaxLoad)
	a.idleAt = now
	return a.idleOK, a.idleWhy
}

func (a *Agent) freeDisk(p localapi.Prefs) int64 {
	used, _ := state.DirSize(a.cfg.Dir.Path)
	free := p.MaxDiskMB<<20 - used
	if fs, err := sysinfo.FreeDisk(a.cfg.Dir.Path); err == nil && fs < free {
		free = fs
	}
	if free < 0 {
		free = 0
	}
	return free
}

// fetchWork asks for a work unit; nil when the server has none (after waiting as told).
func (a *Agent) fetchWork(ctx context.Context) (*checkpoint.Descriptor, error) {
	p := a.cfg.Prefs.Get()
	req := protocol.WorkRequest{Threads: p.MaxThreads, FreeMemoryBytes: p.MaxMemoryMB << 20, FreeDiskBytes: a.freeDisk(p), GFLOPS: a.cfg.GFLOPS}
	var resp *protocol.WorkResponse
	a.setState(localapi.StateIdle, "asking for work")
	err := a.retry(ctx, "ask for work", func(ctx context.Context) error {
		var err error
		resp, err = a.cfg.API.RequestWork(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	if resp.WorkUnit == nil {
		wait := time.Duration(resp.RetryAfterSeconds) * time.Second
		if wait <= 0 {
			wait = a.policy().Delay(4)
		}
		a.setState(localapi.StateIdle, fmt.Sprintf("no work: %s (asking again in %s)", resp.Message, wait.Round(time.Second)))
		a.log.Info("no work", "message", resp.Message, "retry_after", wait)
		return nil, backoff.Sleep(ctx, wait)
	}
	wu := resp.WorkUnit
	if err := checkWorkUnit(wu); err != nil {
		return nil, err
	}
	mem, disk, err := Estimate(wu)
	if err != nil {
		return nil, err
	}
	if mem > p.MaxMemoryMB<<20 {
		return nil, a.refuse(ctx, fmt.Errorf("work unit %d needs about %d MB of memory, over the %d MB cap: %w", wu.ID, mem>>20, p.MaxMemoryMB, ErrDoesNotFit))
	}
	if disk > p.MaxDiskMB<<20 {
		return nil, a.refuse(ctx, fmt.Errorf("work unit %d needs about %d MB of disk, over the %d MB cap: %w", wu.ID, disk>>20, p.MaxDiskMB, ErrDoesNotFit))
	}
	d := &checkpoint.Descriptor{WorkUnit: *wu, Threads: p.MaxThreads, Accepted: time.Now()}
	if err := a.work.SaveDescriptor(*d); err != nil {
		return nil, err
	}
	a.log.Info("work unit", "id", wu.ID, "campaign", wu.CampaignID, "round", wu.Round, "fragments", wu.FragmentCount, "epochs", wu.Hyper.Epochs, "deadline", wu.Deadline)
	return d, nil
}

// refuse drops a work unit the volunteer's limits exclude; the server reissues it
// after its deadline. The agent waits before asking again so it does not grab the
// next one of the same size at once.
func (a *Agent) refuse(ctx context.Context, err error) error {
	a.fail(err)
	a.setState(localapi.StateWaiting, err.Error())
	return backoff.Sleep(ctx, a.policy().Delay(6))
}

// runWorkUnit downloads, trains (resuming when a checkpoint exists), and uploads.
func (a *Agent) runWorkUnit(ctx context.Context, d *checkpoint.Descriptor) error {
	wu := &d.WorkUnit
	a.update(func(s *localapi.Status) {
		s.State, s.Reason = localapi.StateWorking, ""
		s.WorkUnit = &localapi.WorkUnit{ID: wu.ID, CampaignID: wu.CampaignID, Round: wu.Round, Phase: localapi.PhaseDownloading, Deadline: wu.Deadline, Epochs: wu.Hyper.Epochs}
	})
	defer a.update(func(s *localapi.Status) { s.WorkUnit = nil })

	basePath := a.work.BasePath(wu.BaseModel.SHA256)
	if err := verifyFile(basePath, wu.BaseModel.SHA256); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			a.fail(fmt.Errorf("work unit %d: saved base model: %w; downloading it again", wu.ID, err))
			os.Remove(basePath)
		}
		err := a.retry(ctx, "download base model", func(ctx context.Context) error {
			return a.cfg.API.FetchBlob(ctx, wu.BaseModel, basePath)
		})
		if err != nil && ctx.Err() == nil && !errors.Is(err, apiclient.ErrUnauthorized) && !apiclient.Retryable(err) {
			// The server will never serve this base model (404, 410 ...): drop the unit.
			a.work.Clear()
			return fmt.Errorf("work unit %d dropped: base model: %w", wu.ID, err)
		}
		if err != nil {
			return fmt.Errorf("work unit %d: base model: %w", wu.ID, err)
		}
	}
	meta, st, err := a.work.LoadState(wu.ID)
	if errors.Is(err, checkpoint.ErrCorrupt) {
		a.fail(fmt.Errorf("%w; restarting work unit %d from the beginning", err, wu.ID))
		meta, st = nil, nil
	} else if err != nil {
		return err
	}
	p := a.cfg.Prefs.Get()
	_, disk, _ := Estimate(wu)
	cacheBytes := p.MaxDiskMB<<20 - disk
	if cacheBytes < 1<<20 {
		cacheBytes = 1 << 20
	}
	var job Job
	err = a.retry(ctx, "prepare work unit", func(ctx context.Context) error {
		var err error
		job, err = a.cfg.Trainer.Prepare(ctx, wu, basePath, d.Threads, cacheBytes, st)
		if errors.Is(err, ErrBadCheckpoint) {
			a.fail(fmt.Errorf("work unit %d: %w; starting it again", wu.ID, err))
			st, meta = nil, nil
			os.Remove(a.work.StatePath())
		}
		if errors.Is(err, ErrDoesNotFit) || errors.Is(err, ErrBadWorkUnit) {
			return backoff.Permanent(err)
		}
		return err
	})
	switch {
	case errors.Is(err, ErrDoesNotFit):
		a.work.Clear()
		return a.refuse(ctx, err)
	case errors.Is(err, ErrBadWorkUnit):
		a.work.Clear()
		return fmt.Errorf("work unit %d dropped: %w", wu.ID, err)
	case err != nil:
		return fmt.Errorf("work unit %d: %w", wu.ID, err)
	}
	defer job.Close()
	if meta != nil {
		a.log.Info("resumed from checkpoint", "work_unit", wu.ID, "progress", meta.Progress, "written", meta.Written)
	}
	a.update(func(s *localapi.Status) {
		s.WorkUnit.Phase, s.WorkUnit.Progress, s.WorkUnit.Resumed = localapi.PhaseTraining, job.Progress(), meta != nil
		s.WorkUnit.StartedAt = time.Now()
	})
	epoch, err := a.train(ctx, d, job)
	switch {
	case errors.Is(err, errDropped):
		return nil
	case errors.Is(err, ErrDiverged):
		return a.giveUp(ctx, wu, job.Progress(), epoch, err)
	case err != nil:
		return err
	}
	delta, samples, loss, err := job.Result()
	if err == nil && !finite(loss) {
		err = fmt.Errorf("%w: the mean loss of the last epoch is %v", ErrDiverged, loss)
	}
	if errors.Is(err, ErrDiverged) {
		return a.giveUp(ctx, wu, 1, epoch, fmt.Errorf("work unit %d: delta: %w", wu.ID, err))
	}
	if err != nil {
		return fmt.Errorf("work unit %d: delta: %w", wu.ID, err)
	}
	r := checkpoint.Result{WorkUnit: wu.ID, Samples: samples, Loss: loss}
	if err := a.work.SaveResult(r, delta); err != nil {
		return err
	}
	// Upload what is on disk, exactly the bytes a restart would send.
	saved, body, err := a.work.LoadResult()
	if err != nil {
		return err
	}
	return a.upload(ctx, saved, body)
}

// progress is the training position shared with the heartbeat goroutine.
type progress struct {
	mu sync.Mutex
	hb protocol.HeartbeatRequest
}

// train runs the job's batches to the end and returns the last epoch trained. A batch
// with a loss that is not finite ends it with an error matching ErrDiverged, before
// the loss reaches a heartbeat, the status or a checkpoint.
func (a *Agent) train(ctx context.Context, d *checkpoint.Descriptor, job Job) (int, error) {
	wu := &d.WorkUnit
	wctx, cancel := context.WithCancelCause(ctx)
	pr := &progress{hb: protocol.HeartbeatRequest{Progress: job.Progress()}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.heartbeats(wctx, wu.ID, pr, cancel)
	}()
	defer wg.Wait()   // runs second: the heartbeat goroutine has stopped
	defer cancel(nil) // runs first

	lastCkpt := time.Now()
	startProg := job.Progress()
	dirty := false
	var info StepInfo
	saveCkpt := func() error {
		b, err := job.Checkpoint()
		if err != nil {
			return fmt.Errorf("work unit %d: checkpoint: %w", wu.ID, err)
		}
		m := checkpoint.Meta{WorkUnit: wu.ID, Progress: job.Progress(), Epoch: info.Epoch, Samples: info.Samples, Written: time.Now()}
		if err := a.work.SaveState(m, b); err != nil {
			return err
		}
		a.log.Debug("checkpoint", "work_unit", wu.ID, "progress", m.Progress)
		lastCkpt, dirty = time.Now(), false
		return nil
	}
	// stop ends training early: on shutdown it keeps the work (checkpoint), on an
	// abort it drops it.
	stop := func() error {
		if cause := context.Cause(wctx); errors.Is(cause, ErrAborted) || errors.Is(cause, apiclient.ErrWUClosed) {
			a.log.Warn("work unit stopped by the server", "work_unit", wu.ID, "reason", cause)
			a.fail(fmt.Errorf("work unit %d: %w", wu.ID, cause))
			if err := a.work.Clear(); err != nil {
				return err
			}
			return errDropped
		}
		if dirty {
			if err := saveCkpt(); err != nil {
				return err
			}
			a.log.Info("checkpointed on shutdown", "work_unit", wu.ID, "progress", job.Progress())
		}
		return ctx.Err()
	}
	thr := &throttle{account: func(busy, slept time.Duration) {
		a.update(func(s *localapi.Status) {
			s.BusySeconds += busy.Seconds()
			a.metrics.training.Add(busy.Seconds())
			s.ThrottledSeconds += slept.Seconds()
		})
	}}
	for {
		if wctx.Err() != nil {
			return info.Epoch, stop()
		}
		if err := a.gate(wctx); err != nil {
			return info.Epoch, stop()
		}
		a.update(func(s *localapi.Status) { s.State, s.Reason = localapi.StateWorking, "" })
		p := a.cfg.Prefs.Get()
		thr.begin()
		var err error
		// A batch runs to its end even when shutdown is asked for, so the checkpoint
		// that follows is at a batch boundary.
		next, err := job.Step(context.WithoutCancel(wctx))
		if err != nil {
			return info.Epoch, fmt.Errorf("work unit %d: train: %w", wu.ID, err)
		}
		if !finite(next.Loss) {
			return next.Epoch, fmt.Errorf("work unit %d: %w: the loss is %v at epoch %d batch %d", wu.ID, ErrDiverged, next.Loss, next.Epoch, next.Batch)
		}
		info = next
		dirty = true
		prog := job.Progress()
		pr.mu.Lock()
		pr.hb = protocol.HeartbeatRequest{Progress: prog, Epoch: info.Epoch, Loss: info.Loss}
		pr.mu.Unlock()
		a.update(func(s *localapi.Status) {
			if s.WorkUnit != nil {
				s.WorkUnit.SecondsLeft = secondsLeft(startProg, prog, time.Since(s.WorkUnit.StartedAt))
				s.WorkUnit.Progress, s.WorkUnit.Epoch, s.WorkUnit.Loss = prog, info.Epoch, info.Loss
			}
		})
		if info.Done {
			thr.account(time.Since(thr.wall), 0)
			return info.Epoch, nil
		}
		if time.Since(lastCkpt) >= time.Duration(p.CheckpointSeconds)*time.Second {
			if err := saveCkpt(); err != nil {
				return info.Epoch, err
			}
		}
		if err := thr.end(wctx, p.CPULimitPercent); err != nil {
			return info.Epoch, stop()
		}
	}
}

// heartbeats reports progress every HeartbeatSeconds until ctx ends; an abort answer
// (or a closed work unit) cancels the training with that cause.
func (a *Agent) heartbeats(ctx context.Context, id int64, pr *progress, cancel context.CancelCauseFunc) {
	for {
		secs := a.cfg.Prefs.Get().HeartbeatSeconds
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(secs) * time.Second):
		}
		pr.mu.Lock()
		hb := pr.hb
		pr.mu.Unlock()
		resp, err := a.cfg.API.Heartbeat(ctx, id, hb)
		switch {
		case errors.Is(err, apiclient.ErrWUClosed):
			cancel(fmt.Errorf("%w", apiclient.ErrWUClosed))
			return
		case err != nil:
			if ctx.Err() == nil {
				a.log.Warn("heartbeat failed", "work_unit", id, "err", err)
			}
		case resp.Abort:
			cancel(fmt.Errorf("%w: %s", ErrAborted, resp.Reason))
			return
		case !resp.Deadline.IsZero():
			a.update(func(s *localapi.Status) {
				if s.WorkUnit != nil && s.WorkUnit.ID == id {
					s.WorkUnit.Deadline = resp.Deadline
				}
			})
		}
	}
}

// giveUp reports a work unit whose training diverged and drops it: training it again
// would diverge again. The server records the failure and gives the slot to another
// host; a unit the server has aborted (campaign stopped, host detached) or that a
// server without failure reports (protocol version 1) does not know is dropped all the
// same. Only a shutdown or a forgotten host keeps the unit, to report it after the
// restart (resumed from its last checkpoint, it diverges again).
func (a *Agent) giveUp(ctx context.Context, wu *protocol.WorkUnit, prog float64, epoch int, cause error) error {
	a.fail(cause)
	msg := cause.Error()
	if len(msg) > maxFailureMessage {
		msg = msg[:maxFailureMessage]
	}
	req := protocol.FailureRequest{Reason: protocol.FailureDiverged, Message: msg, Progress: min(max(prog, 0), 1), Epoch: max(epoch, 0)}
	var resp *protocol.FailureResponse
	err := a.retry(ctx, fmt.Sprintf("report failure of work unit %d", wu.ID), func(ctx context.Context) error {
		var err error
		resp, err = a.cfg.API.ReportFailure(ctx, wu.ID, req)
		return err
	})
	switch {
	case err == nil:
		a.log.Warn("work unit failed: reported to the server", "work_unit", wu.ID, "round", resp.Round, "reissued", resp.Reissued,
			"replayed", resp.Replayed, "cause", cause)
	case ctx.Err() != nil, errors.Is(err, apiclient.ErrUnauthorized), errors.Is(err, apiclient.ErrUpgrade):
		return err
	case errors.Is(err, apiclient.ErrWUClosed):
		a.log.Warn("work unit failed and dropped: the server had already closed it", "work_unit", wu.ID, "err", err)
	default:
		a.fail(fmt.Errorf("work unit %d dropped; its failure report was refused: %w", wu.ID, err))
	}
	a.mu.Lock()
	a.results++
	a.mu.Unlock()
	return a.work.Clear()
}

// maxFailureMessage is the longest message a failure report carries (the server's
// limit).
const maxFailureMessage = 1000

// finite reports whether v is neither NaN nor infinite.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// upload sends a finished delta until the server answers; the same bytes every time,
// so a retry after a lost answer is a replay the server recognises.
func (a *Agent) upload(ctx context.Context, r *checkpoint.Result, delta []byte) error {
	a.update(func(s *localapi.Status) {
		s.State, s.Reason = localapi.StateWorking, ""
		if s.WorkUnit == nil {
			s.WorkUnit = &localapi.WorkUnit{ID: r.WorkUnit}
		}
		s.WorkUnit.Phase, s.WorkUnit.Progress = localapi.PhaseUploading, 1
	})
	var resp *protocol.ResultResponse
	err := a.retry(ctx, fmt.Sprintf("upload result %d", r.WorkUnit), func(ctx context.Context) error {
		var err error
		a.metrics.upload.Add(float64(len(delta)))
		resp, err = a.cfg.API.UploadResult(ctx, r.WorkUnit, apiclient.Result{Delta: delta, SHA256: r.SHA256, Samples: r.Samples, Loss: r.Loss})
		return err
	})
	switch {
	case err == nil:
		a.log.Info("result accepted", "work_unit", r.WorkUnit, "outcome", resp.Outcome, "round", resp.Round, "credit", resp.Credit, "replayed", resp.Replayed)
		a.metrics.units.WithLabelValues(resp.Outcome).Inc()
		a.metrics.samples.Add(float64(r.Samples))
		a.update(func(s *localapi.Status) {
			if resp.Outcome == protocol.OutcomeLate {
				s.Late++
			} else {
				s.Completed++
			}
		})
	case errors.Is(err, apiclient.ErrLate):
		a.log.Warn("result late: the round closed without it", "work_unit", r.WorkUnit)
		a.metrics.units.WithLabelValues(protocol.OutcomeLate).Inc()
		a.metrics.samples.Add(float64(r.Samples))
		a.update(func(s *localapi.Status) { s.Late++ })
	case ctx.Err() != nil, errors.Is(err, apiclient.ErrUnauthorized), errors.Is(err, apiclient.ErrUpgrade):
		return err // shutdown, a forgotten host or an old client: the result stays on disk
	default:
		// A final answer (closed work unit, invalid delta, too large ...): sending the
		// same bytes again cannot change it.
		a.metrics.units.WithLabelValues("dropped").Inc()
		a.fail(fmt.Errorf("result %d dropped: %w", r.WorkUnit, err))
	}
	a.mu.Lock()
	a.results++
	a.mu.Unlock()
	select {
	case a.hostNow <- struct{}{}:
	default: // a read is already asked for
	}
	return a.work.Clear()
}

// throttle duty-cycles training like BOINC's CPU throttling: after a batch that took
// busy wall time, it sleeps busy x (100 - limit) / limit, so that busy / (busy + sleep)
// equals the limit over the run whatever the batch size. Sleeps overshoot (timer slack,
// waiting for a CPU after waking on a busy machine); the overshoot is carried over and
// taken off the next sleep, so it does not pull the share below the limit. On an idle
// machine the process's CPU time share is then the limit; on a busy one it is lower,
// never higher.
type throttle struct {
	wall time.Time
	over time.Duration // slept beyond what was asked, to take off the next sleep
	// account hears each batch's busy time and the sleep that followed it.
	account func(busy, slept time.Duration)
}

func (t *throttle) begin() { t.wall = time.Now() }

func (t *throttle) end(ctx context.Context, limit int) error {
	busy := time.Since(t.wall)
	if limit >= 100 || limit <= 0 {
		t.over = 0
		t.account(busy, 0)
		return nil
	}
	need := busy*time.Duration(100-limit)/time.Duration(limit) - t.over
	if need <= 0 {
		t.over = -need
		t.account(busy, 0)
		return nil
	}
	start := time.Now()
	err := backoff.Sleep(ctx, need)
	slept := time.Since(start)
	t.over = min(slept-need, time.Second)
	t.account(busy, slept)
	return err
}

// secondsLeft extrapolates the training time left from the progress made since this
// run of training started (from from to now, in elapsed); 0 when nothing is known yet.
func secondsLeft(from, now float64, elapsed time.Duration) float64 {
	if now <= from || now >= 1 || elapsed <= 0 {
		return 0
	}
	return elapsed.Seconds() * (1 - now) / (now - from)
}

// verifyFile checks a file against its sha256.
func verifyFile(path, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%s hashes to %.12s, want %.12s", path, got, sha)
	}
	return nil
}
