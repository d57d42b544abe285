package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func TestSnoozeResumesByItself(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 30, stepTime: 10 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(61)
	a, stop := h.start(nil)
	waitFor(t, "training", func() bool { return tr.stepCount() >= 2 })
	a.PauseFor(time.Second)
	st := a.Status()
	if st.State != localapi.StatePaused || st.PausedUntil == nil {
		t.Fatalf("after snooze: state %q until %v, want paused with an end", st.State, st.PausedUntil)
	}
	until := *st.PausedUntil
	waitFor(t, "the snooze to end by itself", func() bool { return a.Status().PausedUntil == nil })
	waitFor(t, "the result after the snooze", func() bool { return h.srv.Accepted(wu.ID) != "" })
	// 30 batches of 10 ms: without the snooze the result would be in long before it ended.
	if ups := h.srv.UploadsOf(wu.ID); len(ups) == 0 || ups[0].At.Before(until) {
		t.Errorf("uploaded at %v, before the snooze ended at %v", ups, until)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestResumeCancelsSnooze(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 2}, localapi.PrefsPatch{})
	a, stop := h.start(nil)
	defer stop()
	a.PauseFor(time.Hour)
	a.Resume()
	if st := a.Status(); st.PausedUntil != nil || st.State == localapi.StatePaused {
		t.Errorf("after resume: %q until %v, want running without an end", st.State, st.PausedUntil)
	}
	a.Pause()
	if st := a.Status(); st.PausedUntil != nil {
		t.Errorf("a plain pause after a snooze kept its end %v", st.PausedUntil)
	}
}

func TestStatusCarriesHostRecordAndProgress(t *testing.T) {
	t.Parallel()
	tr := &stepTrainer{steps: 60, stepTime: 10 * time.Millisecond}
	h := newHarness(t, tr, localapi.PrefsPatch{})
	wu := h.workUnit(62)
	a, stop := h.start(nil)
	defer stop()
	waitFor(t, "a time-left estimate", func() bool {
		w := a.Status().WorkUnit
		return w != nil && w.SecondsLeft > 0
	})
	st := a.Status()
	if st.APIVersion != localapi.Version || st.WorkUnit.Epochs != 1 || st.WorkUnit.CampaignID != 1 || st.WorkUnit.StartedAt.IsZero() {
		t.Errorf("status %+v work unit %+v: want api version %d, 1 epoch, campaign 1, a start time", st, st.WorkUnit, localapi.Version)
	}
	// 60 steps of 10 ms: whatever is left is well under a minute.
	if s := st.WorkUnit.SecondsLeft; s > 60 {
		t.Errorf("time left %.1fs for a work unit of about 0.6s", s)
	}
	waitFor(t, "the result", func() bool { return h.srv.Accepted(wu.ID) != "" })
	waitFor(t, "the host record read after the upload", func() bool {
		h := a.Status().Host
		return h != nil && h.ResultsValid == 1 && h.Credit == 1
	})
}

func TestServerErrorSetAndCleared(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 3}, localapi.PrefsPatch{})
	wu := h.workUnit(63)
	h.srv.Stop()
	a, stop := h.start(nil)
	defer stop()
	waitFor(t, "a server error in the status", func() bool { return a.Status().ServerError != "" })
	if err := h.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the result after the outage", func() bool { return h.srv.Accepted(wu.ID) != "" })
	waitFor(t, "the server error cleared", func() bool { return a.Status().ServerError == "" })
}

func TestWaitChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 2}, localapi.PrefsPatch{})
	a, stop := h.start(nil)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	before := a.Status()
	// Past seqs answer at once.
	if got := a.WaitChange(context.Background(), before.Seq-1); got.Seq < before.Seq {
		t.Errorf("wait after %d = seq %d", before.Seq-1, got.Seq)
	}
	a.Pause()
	got := a.WaitChange(ctx, before.Seq)
	if got.Seq <= before.Seq || got.State != localapi.StatePaused {
		t.Errorf("wait across a pause = seq %d state %q, want above %d, paused", got.Seq, got.State, before.Seq)
	}
	// Nothing changes while paused with no work: the wait ends with ctx.
	idle := a.Status()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	if got := a.WaitChange(ctx2, idle.Seq+1000); got.Seq > idle.Seq+1000 || time.Since(start) < 90*time.Millisecond {
		t.Errorf("wait for a far seq returned seq %d after %s", got.Seq, time.Since(start))
	}
}
