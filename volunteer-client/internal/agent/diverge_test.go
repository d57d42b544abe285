package agent_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// syncBuffer is a bytes.Buffer safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDivergedUnitIsReported: a work unit whose loss or delta turns NaN or infinite is
// trained once, reported failed (reason diverged, where it stopped, why), dropped from
// disk, and the agent goes on to the next unit; no heartbeat, status or checkpoint ever
// holds the non-finite loss. A unit the server has closed (campaign stopped), or a
// server that does not know failure reports, still ends with the unit dropped.
func TestDivergedUnitIsReported(t *testing.T) {
	t.Parallel()
	nanDelta := fmt.Errorf("%w: tensor \"conv1.w\" element 3 is NaN", agent.ErrDiverged)
	cases := []struct {
		name     string
		div      divergence
		serve    func(srv *fakeserver.Server, id int64)
		reports  int     // failure reports the server receives
		message  string  // in the report's message
		progress float64 // job.Progress() after the diverged batch
		logs     string  // in the agent's log
	}{
		{"NaN loss mid-unit", divergence{at: 15, loss: math.NaN()}, nil, 1, "the loss is NaN at epoch 0 batch 15", 15.0 / 20, "reported to the server"},
		{"infinite loss at the first batch", divergence{at: 1, loss: math.Inf(1)}, nil, 1, "the loss is +Inf at epoch 0 batch 1", 1.0 / 20, "reported to the server"},
		{"non-finite delta", divergence{delta: nanDelta}, nil, 1, "element 3 is NaN", 1, "reported to the server"},
		{"server busy at first", divergence{at: 5, loss: math.NaN()}, func(srv *fakeserver.Server, id int64) {
			srv.Fail(http.MethodPost, protocol.WorkPath(id, "failure"), http.StatusServiceUnavailable, 2)
		}, 1, "loss is NaN", 5.0 / 20, "reported to the server"},
		{"campaign stopped", divergence{at: 5, loss: math.NaN()}, func(srv *fakeserver.Server, id int64) {
			srv.CloseOnFailure(id) // the report answers wu_closed
		}, 1, "loss is NaN", 5.0 / 20, "server had already closed it"},
		{"server without failure reports", divergence{at: 5, loss: math.NaN()}, func(srv *fakeserver.Server, id int64) {
			srv.Fail(http.MethodPost, protocol.WorkPath(id, "failure"), http.StatusNotFound, 1)
		}, 0, "", 0, "failure report was refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := &stepTrainer{steps: 20, stepTime: 100 * time.Millisecond, diverge: map[int64]divergence{1: tc.div}}
			h := newHarness(t, tr, localapi.PrefsPatch{})
			bad, good := h.workUnit(1), h.workUnit(2)
			if tc.serve != nil {
				tc.serve(h.srv, bad.ID)
			}
			var logs syncBuffer
			a := h.run(2, func(c *agent.Config) {
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			var (
				failures []protocol.FailureRequest
				hbs      []protocol.HeartbeatRequest
			)
			h.srv.Snapshot(func(s *fakeserver.Server) {
				failures = append(failures, s.Failures[bad.ID]...)
				hbs = append(hbs, s.Heartbeats[bad.ID]...)
			})
			if len(failures) != tc.reports {
				t.Fatalf("%d failure reports of unit %d, want %d: %+v", len(failures), bad.ID, tc.reports, failures)
			}
			for _, f := range failures {
				if f.Reason != protocol.FailureDiverged || !strings.Contains(f.Message, tc.message) || math.Abs(f.Progress-tc.progress) > 1e-9 {
					t.Errorf("failure report %+v, want reason diverged, progress %g, a message naming %q", f, tc.progress, tc.message)
				}
			}
			if ups := h.srv.UploadsOf(bad.ID); len(ups) != 0 {
				t.Errorf("the diverged unit was uploaded %d times", len(ups))
			}
			if ups := h.srv.UploadsOf(good.ID); len(ups) != 1 || ups[0].Outcome != protocol.OutcomeAccepted {
				t.Errorf("the next unit's uploads: %+v, want one accepted", ups)
			}
			// Trained once: no retraining loop on the same unit.
			n := 0
			for _, c := range tr.calls() {
				if c.WU == bad.ID {
					n++
				}
			}
			if n != 1 {
				t.Errorf("the diverged unit was prepared %d times, want once", n)
			}
			for _, hb := range hbs {
				if math.IsNaN(hb.Loss) || math.IsInf(hb.Loss, 0) {
					t.Errorf("heartbeat carried loss %v", hb.Loss)
				}
			}
			log := logs.String()
			if strings.Contains(log, "unsupported value") {
				t.Errorf("a non-finite number reached JSON:\n%s", log)
			}
			if !strings.Contains(log, tc.logs) {
				t.Errorf("log does not say %q:\n%s", tc.logs, log)
			}
			if st := a.Status(); st.Completed != 1 || st.WorkUnit != nil {
				t.Errorf("status after the run: completed %d, work unit %+v; want 1 and none", st.Completed, st.WorkUnit)
			}
			ents, _ := os.ReadDir(h.dir.File(state.WorkDir))
			if len(ents) != 0 {
				t.Errorf("work dir holds %d files after both units", len(ents))
			}
		})
	}
}
