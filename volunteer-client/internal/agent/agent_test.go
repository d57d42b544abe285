package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// uninterrupted returns the delta a fresh client uploads for a work unit like h's
// work unit id, on its own server: the reference for resume tests.
func uninterrupted(t *testing.T, steps int, id int64) []byte {
	h := newHarness(t, &stepTrainer{steps: steps}, localapi.PrefsPatch{})
	h.workUnit(id)
	h.run(1, nil)
	ups := h.srv.UploadsOf(id)
	if len(ups) != 1 {
		t.Fatalf("reference run uploaded %d times", len(ups))
	}
	return ups[0].Body
}

func TestRunUploadsResult(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 5}, localapi.PrefsPatch{})
	wu := h.workUnit(7)
	a := h.run(1, nil)
	ups := h.srv.UploadsOf(wu.ID)
	if len(ups) != 1 || ups[0].Outcome != protocol.OutcomeAccepted {
		t.Fatalf("uploads = %+v, want one accepted", ups)
	}
	sum := sha256.Sum256(ups[0].Body)
	if ups[0].SHA256 != hex.EncodeToString(sum[:]) || ups[0].Samples != 20 || ups[0].Loss != 0.25 {
		t.Errorf("upload headers sha=%s samples=%d loss=%g; want body sha, 20, 0.25", ups[0].SHA256, ups[0].Samples, ups[0].Loss)
	}
	if st := a.Status(); st.Completed != 1 || st.Late != 0 {
		t.Errorf("status completed=%d late=%d, want 1, 0", st.Completed, st.Late)
	}
	ents, _ := os.ReadDir(h.dir.File(state.WorkDir))
	if len(ents) != 0 {
		t.Errorf("work dir not cleared after the upload: %d files", len(ents))
	}
	var req protocol.WorkRequest
	h.srv.Snapshot(func(s *fakeserver.Server) { req = s.WorkRequests[0] })
	if req.Threads != 2 || req.FreeMemoryBytes != 2048<<20 || req.FreeDiskBytes <= 0 {
		t.Errorf("work request %+v: want threads 2, memory cap 2048 MB, some disk", req)
	}
}

func TestHeartbeatsWhileTraining(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 25, stepTime: 100 * time.Millisecond}, localapi.PrefsPatch{})
	wu := h.workUnit(3)
	h.run(1, nil)
	var hbs []protocol.HeartbeatRequest
	h.srv.Snapshot(func(s *fakeserver.Server) { hbs = s.Heartbeats[wu.ID] })
	if len(hbs) < 1 {
		t.Fatalf("no heartbeat in a 2.5 s work unit with heartbeat_seconds 1")
	}
	for i := 1; i < len(hbs); i++ {
		if hbs[i].Progress < hbs[i-1].Progress {
			t.Errorf("heartbeat progress went back: %v", hbs)
		}
	}
	if last := hbs[len(hbs)-1].Progress; last <= 0 || last > 1 {
		t.Errorf("last heartbeat progress %g, want in (0, 1]", last)
	}
}

func TestLateResultDroppedThenNextWork(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 3}, localapi.PrefsPatch{})
	late := h.workUnit(1)
	next := h.workUnit(2)
	h.srv.SetLate(late.ID)
	a := h.run(2, nil)
	if ups := h.srv.UploadsOf(late.ID); len(ups) != 1 || ups[0].Outcome != protocol.OutcomeLate {
		t.Errorf("late work unit uploads %+v: want exactly one, answered late (no retry of a late answer)", ups)
	}
	if h.srv.Accepted(next.ID) == "" {
		t.Error("the next work unit was not accepted after the late one")
	}
	if st := a.Status(); st.Late != 1 || st.Completed != 1 {
		t.Errorf("status late=%d completed=%d, want 1 and 1", st.Late, st.Completed)
	}
}

func TestTransientFailuresRetried(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		inject func(s *fakeserver.Server, wu *protocol.WorkUnit)
	}{
		{"work request 500", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodPost, protocol.APIPrefix+"/work", 500, 3)
		}},
		{"work request 503 then dropped", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodPost, protocol.APIPrefix+"/work", 503, 1)
			s.Fail(http.MethodPost, protocol.APIPrefix+"/work", 0, 2)
		}},
		{"blob dropped", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodGet, protocol.APIPrefix+"/blobs/", 0, 3)
		}},
		{"upload 502", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodPut, protocol.WorkPath(wu.ID, "result"), 502, 3)
		}},
		{"upload dropped before processing", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodPut, protocol.WorkPath(wu.ID, "result"), 0, 2)
		}},
		{"upload answer lost after acceptance", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.DropAnswers(wu.ID, 2)
		}},
		{"rate limited", func(s *fakeserver.Server, wu *protocol.WorkUnit) {
			s.Fail(http.MethodPost, protocol.APIPrefix+"/work", 429, 2)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, &stepTrainer{steps: 3}, localapi.PrefsPatch{})
			wu := h.workUnit(11)
			c.inject(h.srv, wu)
			h.run(1, nil)
			ups := h.srv.UploadsOf(wu.ID)
			accepted := 0
			for _, u := range ups {
				if u.Outcome == protocol.OutcomeAccepted {
					accepted++
				}
				if !bytes.Equal(u.Body, ups[0].Body) {
					t.Error("a retried upload sent different bytes")
				}
			}
			if accepted != 1 {
				t.Errorf("accepted %d times over %d uploads, want exactly once", accepted, len(ups))
			}
		})
	}
}

func TestServerUnreachableThenBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 3}, localapi.PrefsPatch{})
	wu := h.workUnit(5)
	h.srv.Stop()
	a, stop := h.start(nil)
	var first time.Time
	waitFor(t, "a retry error in the status", func() bool {
		st := a.Status()
		if st.LastErrorAt != nil {
			first = *st.LastErrorAt
		}
		return strings.Contains(st.LastError, "retrying")
	})
	// Down for more than one attempt: the agent keeps retrying, not just once.
	waitFor(t, "a second failed attempt", func() bool {
		st := a.Status()
		return st.LastErrorAt != nil && st.LastErrorAt.After(first)
	})
	if err := h.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the result after the outage", func() bool { return h.srv.Accepted(wu.ID) != "" })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestServerDownDuringUploadSurvivesRestart(t *testing.T) {
	t.Parallel()
	want := uninterrupted(t, 4, 21)
	h := newHarness(t, &stepTrainer{steps: 4}, localapi.PrefsPatch{})
	wu := h.workUnit(21)
	h.srv.Fail(http.MethodPut, protocol.WorkPath(wu.ID, "result"), 0, 1000)
	a, stop := h.start(nil)
	waitFor(t, "the upload phase", func() bool {
		st := a.Status()
		return st.WorkUnit != nil && st.WorkUnit.Phase == localapi.PhaseUploading && len(h.srv.UploadsOf(wu.ID)) == 0 && strings.Contains(st.LastError, "upload")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.dir.File(state.WorkDir), "result.json")); err != nil {
		t.Fatalf("finished delta not persisted across the shutdown: %v", err)
	}
	// A new client process; the server is healthy again.
	h.srv.ClearFaults()
	tr2 := &stepTrainer{steps: 4}
	h.cfg.Trainer = tr2
	h.run(1, nil)
	if len(tr2.calls()) != 0 {
		t.Errorf("the restarted client trained again instead of uploading the saved delta")
	}
	if got := h.srv.UploadsOf(wu.ID); len(got) != 1 || !bytes.Equal(got[0].Body, want) {
		t.Errorf("after restart: %d uploads; want one equal to the uninterrupted delta", len(got))
	}
}

func TestShutdownCheckpointsAndResumes(t *testing.T) {
	t.Parallel()
	const steps = 30
	want := uninterrupted(t, steps, 31)
	tr := &stepTrainer{steps: steps, stepTime: 20 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(31)
	a, stop := h.start(nil)
	waitFor(t, "training half-way", func() bool {
		st := a.Status()
		return st.WorkUnit != nil && st.WorkUnit.Progress >= 0.4
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if tr.stepCount() >= steps {
		t.Fatalf("the work unit finished before the shutdown; the test needs more steps")
	}
	if len(h.srv.UploadsOf(wu.ID)) != 0 {
		t.Fatal("uploaded before finishing")
	}
	tr2 := &stepTrainer{steps: steps}
	h.cfg.Trainer = tr2
	h.run(1, nil)
	calls := tr2.calls()
	if len(calls) != 1 || !calls[0].Resumed {
		t.Fatalf("restart prepared %+v, want one resumed job", calls)
	}
	if total := tr.stepCount() + tr2.stepCount(); total != steps {
		t.Errorf("steps before and after the shutdown add up to %d, want %d (no batch lost or repeated)", total, steps)
	}
	ups := h.srv.UploadsOf(wu.ID)
	if len(ups) != 1 || !bytes.Equal(ups[0].Body, want) {
		t.Errorf("resumed delta differs from the uninterrupted one")
	}
}

func TestFinalUploadErrorDropsResult(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		status int
	}{{"bad request", 400}, {"too large", 413}, {"invalid delta", 422}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, &stepTrainer{steps: 2}, localapi.PrefsPatch{})
			wu := h.workUnit(12)
			next := h.workUnit(13)
			h.srv.Fail(http.MethodPut, protocol.WorkPath(wu.ID, "result"), c.status, 1000)
			h.run(2, nil)
			h.srv.Snapshot(func(s *fakeserver.Server) {
				if n := s.Hits[http.MethodPut+" "+protocol.WorkPath(wu.ID, "result")]; n != 1 {
					t.Errorf("sent the result %d times after a final %d answer, want once", n, c.status)
				}
			})
			if h.srv.Accepted(next.ID) == "" {
				t.Error("the client did not move on to the next work unit after a final answer")
			}
		})
	}
}

func TestAbortStopsWorkUnit(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 1000, stepTime: 10 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	aborted := h.workUnit(41)
	h.srv.SetAbort(aborted.ID, "round_closed")
	a, stop := h.start(nil)
	waitFor(t, "the abort", func() bool { return strings.Contains(a.Status().LastError, "aborted") })
	waitFor(t, "the work dir to be cleared", func() bool {
		_, err := os.Stat(filepath.Join(h.dir.File(state.WorkDir), "wu.json"))
		return os.IsNotExist(err)
	})
	stop()
	if n := tr.stepCount(); n >= 1000 {
		t.Errorf("trained all %d steps of an aborted work unit", n)
	}
	if ups := h.srv.UploadsOf(aborted.ID); len(ups) != 0 {
		t.Errorf("uploaded an aborted work unit")
	}
}

func TestClosedWorkUnitHeartbeatStops(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 1000, stepTime: 10 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(42)
	h.srv.SetClosed(wu.ID)
	h.workUnit(43)
	a, stop := h.start(nil)
	waitFor(t, "the closed work unit to be dropped", func() bool { return strings.Contains(a.Status().LastError, "closed") })
	waitFor(t, "the next work unit", func() bool {
		for _, c := range tr.calls() {
			if c.WU == 43 {
				return true
			}
		}
		return false
	})
	stop()
	if len(h.srv.UploadsOf(wu.ID)) != 0 {
		t.Error("uploaded a closed work unit")
	}
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 40, stepTime: 10 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(51)
	a, stop := h.start(nil)
	waitFor(t, "training", func() bool { return tr.stepCount() >= 3 })
	a.Pause()
	waitFor(t, "paused state", func() bool { return a.Status().State == localapi.StatePaused })
	n := tr.stepCount()
	time.Sleep(300 * time.Millisecond) // a spell in which no batch may run: the thing under test
	if m := tr.stepCount(); m > n+1 {
		t.Fatalf("trained %d batches while paused", m-n)
	}
	if st := a.Status(); st.WorkUnit == nil || st.WorkUnit.Progress >= 1 {
		t.Fatalf("paused status lost the work unit: %+v", st)
	}
	a.Resume()
	waitFor(t, "the result after resume", func() bool { return h.srv.Accepted(wu.ID) != "" })
	stop()
	if tr.stepCount() != 40 {
		t.Errorf("trained %d batches, want 40", tr.stepCount())
	}
}

func TestWaitsOutsideTimeWindow(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 2}
	h := newHarness(t, tr, localapi.PrefsPatch{TimeWindow: ptr("22:00-07:00")})
	wu := h.workUnit(61)
	noon := time.Date(2026, 11, 21, 12, 0, 0, 0, time.Local)
	var mu syncTime
	mu.set(noon)
	a, stop := h.start(func(c *agent.Config) { c.Now = mu.get })
	waitFor(t, "waiting state", func() bool {
		st := a.Status()
		return st.State == localapi.StateWaiting && strings.Contains(st.Reason, "time window")
	})
	h.srv.Snapshot(func(s *fakeserver.Server) {
		if len(s.WorkRequests) != 0 {
			t.Errorf("asked for work outside the time window")
		}
	})
	mu.set(noon.Add(11 * time.Hour)) // 23:00
	waitFor(t, "work inside the window", func() bool { return h.srv.Accepted(wu.ID) != "" })
	stop()
}

func TestRunOnlyWhenIdle(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 60, stepTime: 5 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{RunOnlyWhenIdle: ptr(true)})
	wu := h.workUnit(71)
	det := &switchIdle{}
	a, stop := h.start(func(c *agent.Config) { c.Idle = det; c.Poll = 300 * time.Millisecond })
	waitFor(t, "waiting for idle", func() bool {
		st := a.Status()
		return st.State == localapi.StateWaiting && strings.Contains(st.Reason, "in use")
	})
	if len(tr.calls()) != 0 {
		t.Fatal("started work while the machine was in use")
	}
	det.set(true)
	start := time.Now()
	waitFor(t, "work once idle", func() bool { return h.srv.Accepted(wu.ID) != "" })
	stop()
	// The gate runs between batches but asks the detector once per Poll interval.
	if n, most := det.count(), 3+int(time.Since(start)/(300*time.Millisecond)); n > most+3 {
		t.Errorf("asked the idle detector %d times for 60 batches in %s, want about one per 300 ms", n, time.Since(start))
	}
}

func TestMemoryCapRefusesWorkUnit(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 2}
	h := newHarness(t, tr, localapi.PrefsPatch{MaxMemoryMB: ptr(int64(16))})
	wu := h.workUnit(81)
	wu.Hyper.BatchSize = 256
	wu.FragmentSize = 256
	a, stop := h.start(nil)
	waitFor(t, "the refusal", func() bool { return strings.Contains(a.Status().LastError, "over the 16 MB cap") })
	stop()
	if len(tr.calls()) != 0 {
		t.Error("prepared a work unit over the memory cap")
	}
	mem, _, err := agent.Estimate(wu)
	if err != nil || mem <= 16<<20 {
		t.Errorf("estimate %d bytes, err %v: want over 16 MB", mem, err)
	}
}

func TestDiskCapBoundsCacheAndRefuses(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 2}
	h := newHarness(t, tr, localapi.PrefsPatch{MaxDiskMB: ptr(int64(64))})
	h.workUnit(91)
	h.run(1, nil)
	calls := tr.calls()
	if len(calls) != 1 || calls[0].CacheBytes <= 0 || calls[0].CacheBytes >= 64<<20 {
		t.Fatalf("prepare calls %+v: want the cache bounded below the 64 MB disk cap", calls)
	}
	// A trainer that finds the images do not fit: the work unit is dropped.
	tr.failNext = agent.ErrDoesNotFit
	wu := h.workUnit(92)
	a, stop := h.start(nil)
	waitFor(t, "the disk refusal", func() bool { return strings.Contains(a.Status().LastError, "does not fit") })
	stop()
	if len(h.srv.UploadsOf(wu.ID)) != 0 {
		t.Error("uploaded a refused work unit")
	}
	if _, err := os.Stat(filepath.Join(h.dir.File(state.WorkDir), "wu.json")); !os.IsNotExist(err) {
		t.Error("refused work unit left on disk")
	}
}

func TestCorruptBaseModelNotUsed(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 2}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(101)
	good := []byte("base model of work unit 101")
	h.srv.CorruptBlob(wu.BaseModel.SHA256, []byte("base model of work unit 10X"))
	a, stop := h.start(nil)
	waitFor(t, "the sha256 mismatch", func() bool { return strings.Contains(a.Status().LastError, "does not match its sha256") })
	if len(tr.calls()) != 0 {
		t.Fatal("trained on a corrupt base model")
	}
	h.srv.CorruptBlob(wu.BaseModel.SHA256, good)
	waitFor(t, "the result after the good download", func() bool { return h.srv.Accepted(wu.ID) != "" })
	stop()
}

func TestMissingBaseModelDropsWorkUnit(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 2}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	gone := h.workUnit(111)
	gone.BaseModel.SHA256 = strings.Repeat("ab", 32)
	gone.BaseModel.URL = protocol.BlobPath(gone.BaseModel.SHA256)
	next := h.workUnit(112)
	a := h.run(1, nil)
	if h.srv.Accepted(next.ID) == "" {
		t.Fatal("the next work unit did not run")
	}
	if len(tr.calls()) != 1 || tr.calls()[0].WU != next.ID {
		t.Errorf("prepared %+v, want only work unit %d", tr.calls(), next.ID)
	}
	if e := a.Status().LastError; !strings.Contains(e, "work unit 111 dropped") || !strings.Contains(e, "404") {
		t.Errorf("last error %q, want the dropped work unit and the 404", e)
	}
}

func TestUnauthorizedStopsRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 1}, localapi.PrefsPatch{})
	cfg := h.cfg
	api, err := apiclient.New(h.srv.URL(), "wrong-token", "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.API = api
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Run with a wrong token = %v, want a 401 error", err)
	}
}

// switchIdle is an idle detector the test flips.
type switchIdle struct {
	mu    sync.Mutex
	idle  bool
	calls int
}

func (s *switchIdle) set(v bool) { s.mu.Lock(); s.idle = v; s.calls = 0; s.mu.Unlock() }
func (s *switchIdle) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
func (s *switchIdle) Idle(ctx context.Context, d time.Duration, l float64) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return idle.Always{Value: s.idle}.Idle(ctx, d, l)
}

// syncTime is a settable clock.
type syncTime struct {
	mu sync.Mutex
	t  time.Time
}

func (s *syncTime) set(t time.Time) { s.mu.Lock(); s.t = t; s.mu.Unlock() }
func (s *syncTime) get() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t
}
