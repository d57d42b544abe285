package agent_test

import (
	"testing"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// TestCPULimit measures the process's CPU time share (getrusage) over whole work
// units trained under a CPU limit: it must be within 10 points of the limit. Not
// parallel: the measurement is of the whole process.
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
			tr := &stepTrainer{steps: c.steps, burn: 50 * time.Millisecond}
			h := newHarness(t, tr, localapi.PrefsPatch{CPULimitPercent: ptr(c.limit), MaxThreads: ptr(1)})
			h.workUnit(1)
			_, stop := h.start(nil)
			waitFor(t, "training to start", func() bool { return tr.stepCount() >= 2 })
			cpu0, wall0 := processCPU(), time.Now()
			waitFor(t, "training to end", func() bool { return tr.stepCount() >= c.steps })
			cpu, wall := processCPU()-cpu0, time.Since(wall0)
			stop()
			share := 100 * cpu.Seconds() / wall.Seconds()
			t.Logf("cpu limit %d%%: measured %.1f%% (%.2fs CPU over %.2fs wall, %d batches of 50 ms CPU)", c.limit, share, cpu.Seconds(), wall.Seconds(), c.steps-2)
			if share < float64(c.limit)-10 || share > float64(c.limit)+10 {
				t.Errorf("CPU share %.1f%%, want %d%% ± 10", share, c.limit)
			}
		})
	}
}
