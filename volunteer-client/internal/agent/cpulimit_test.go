package agent_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// schedstat returns a thread's CPU time and the time it spent runnable but waiting
// for a CPU (/proc/self/task/<tid>/schedstat).
func schedstat(t *testing.T, tid int) (run, wait time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		t.Skipf("no schedstat: %v", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		t.Skipf("schedstat %q", b)
	}
	r, err1 := strconv.ParseInt(f[0], 10, 64)
	w, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		t.Skipf("schedstat %q", b)
	}
	return time.Duration(r), time.Duration(w)
}

// TestCPULimit measures the process's CPU time share (getrusage) over whole work
// units trained under a CPU limit, with one training thread. The throttle is a duty
// cycle: busy / (busy + sleep) = limit. On an idle machine the CPU share must be within
// 10 points of the limit. This machine is shared, so the test also reads the training
// thread's scheduler statistics: its demand share (CPU + time runnable but waiting for
// a CPU) / wall must be within 10 points of the limit however busy the machine is, and
// the process's CPU share may never exceed the limit by more than 10 points. Not parallel: the
// measurement is of the whole process.
func TestCPULimit(t *testing.T) {
	cases := []struct {
		name  string
		limit int
		steps int
	}{
		{"limit 50", 50, 40},
		{"limit 25", 25, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			br := newBurner()
			defer br.stop()
			tr := &stepTrainer{steps: c.steps, burn: 50 * time.Millisecond, burner: br}
			h := newHarness(t, tr, localapi.PrefsPatch{CPULimitPercent: ptr(c.limit), MaxThreads: ptr(1)})
			h.workUnit(1)
			a, stop := h.start(nil)
			waitFor(t, "training to start", func() bool { return tr.stepCount() >= 2 })
			run0, wait0 := schedstat(t, br.tid)
			cpu0, wall0 := processCPU(), time.Now()
			waitFor(t, "training to end", func() bool { return tr.stepCount() >= c.steps })
			cpu, wall := processCPU()-cpu0, time.Since(wall0)
			run1, wait1 := schedstat(t, br.tid)
			stop()
			run, wait := run1-run0, wait1-wait0
			if st := a.Status(); st.BusySeconds <= 0 || st.ThrottledSeconds <= 0 {
				t.Errorf("status busy %.2fs throttled %.2fs, want both counted", st.BusySeconds, st.ThrottledSeconds)
			} else if duty := 100 * st.BusySeconds / (st.BusySeconds + st.ThrottledSeconds); duty < float64(c.limit)-10 || duty > float64(c.limit)+10 {
				t.Errorf("reported duty cycle %.1f%%, want %d%% ± 10", duty, c.limit)
			}
			share := 100 * cpu.Seconds() / wall.Seconds()
			demand := 100 * (run + wait).Seconds() / wall.Seconds()
			contended := 100 * wait.Seconds() / wall.Seconds()
			t.Logf("cpu limit %d%%: process CPU share %.1f%% (%.2fs over %.2fs wall); training thread demand share %.1f%% (%.2fs running + %.2fs waiting for a CPU); %d batches",
				c.limit, share, cpu.Seconds(), wall.Seconds(), demand, run.Seconds(), wait.Seconds(), c.steps-2)
			if share > float64(c.limit)+10 {
				t.Errorf("CPU share %.1f%% is over the %d%% limit", share, c.limit)
			}
			if demand < float64(c.limit)-10 || demand > float64(c.limit)+10 {
				t.Errorf("demand share %.1f%%, want %d%% ± 10", demand, c.limit)
			}
			if contended < 5 && (share < float64(c.limit)-10) {
				t.Errorf("CPU share %.1f%% on an uncontended run, want %d%% ± 10", share, c.limit)
			} else if contended >= 5 {
				t.Logf("the machine was busy (%.0f%% of the window waiting for a CPU): the CPU share may fall below the limit", contended)
			}
		})
	}
}
