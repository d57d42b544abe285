package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestLifecycle: heartbeats tell a host to go on or to abort (round closed, campaign
// stopped); pause stops issuing, resume restarts it; a detached host's units are
// released for reissue; the Prometheus endpoint reports what happened.
func TestLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 3})
		if c.State != protocol.StateDraft {
			t.Fatalf("campaign created without start is %s, want draft", c.State)
		}
		a, b, h3, h4 := e.host(1), e.host(1), e.host(1), e.host(1)
		if w := e.work(a); w != nil {
			t.Fatalf("a draft campaign issued unit %d", w.ID)
		}
		act := func(action string, status int) protocol.Campaign {
			var out protocol.Campaign
			e.must(e.do("POST", fmt.Sprintf("%s/campaigns/%d/%s", protocol.APIPrefix, c.ID, action), e.researcher, nil, nil), status, &out)
			return out
		}
		act(protocol.ActionStart, http.StatusOK)
		wa, wb, w3 := e.work(a), e.work(b), e.work(h3)
		hb := func(tok string, id int64) protocol.HeartbeatResponse {
			var r protocol.HeartbeatResponse
			e.must(e.do("POST", protocol.WorkPath(id, "heartbeat"), tok, protocol.HeartbeatRequest{Progress: 0.5, Epoch: 1}, nil), http.StatusOK, &r)
			return r
		}
		if r := hb(a, wa.ID); r.Abort || !r.Deadline.Equal(wa.Deadline) {
			t.Fatalf("heartbeat on a live unit: %+v", r)
		}
		// Pause: no new units, but results still count.
		if got := act(protocol.ActionPause, http.StatusOK); got.State != protocol.StatePaused {
			t.Fatalf("after pause: %s", got.State)
		}
		if w := e.work(h4); w != nil {
			t.Fatalf("a paused campaign issued unit %d", w.ID)
		}
		ps := params(t, wa)
		e.must(e.upload(a, wa.ID, encode(t, delta(ps, 1, 0.01), weights.F32), nil), http.StatusOK, nil)
		act(protocol.ActionResume, http.StatusOK)
		// Detach: B's unit is aborted, its slot goes to another host, its upload is refused.
		e.must(e.do("DELETE", protocol.DetachPath, b, nil, nil), http.StatusNoContent, nil)
		if r := e.do("POST", protocol.APIPrefix+"/work", b, protocol.WorkRequest{}, nil); r.status != http.StatusUnauthorized {
			t.Fatalf("a detached host's token still works: %d", r.status)
		}
		w4 := e.work(h4)
		if w4 == nil {
			t.Fatal("the fourth host got nothing")
		}
		h5 := e.host(1)
		w4b := e.work(h5)
		if w4b == nil || w4b.Seed != wb.Seed {
			t.Fatalf("the detached host's slot was not reissued: %+v", w4b)
		}
		e.must(e.upload(h3, w3.ID, encode(t, delta(ps, 3, 0.01), weights.F32), nil), http.StatusOK, nil)
		e.must(e.upload(h4, w4.ID, encode(t, delta(ps, 4, 0.01), weights.F32), nil), http.StatusOK, nil)
		// Round 0 closed on the third result. A unit whose result is in is told to stop;
		// one still running in the closed round goes on: its result will be late, credited.
		if r := hb(h3, w3.ID); !r.Abort || r.Reason != "round_closed" {
			t.Fatalf("heartbeat on a unit whose result is in: %+v", r)
		}
		if r := hb(a, wa.ID); !r.Abort {
			t.Fatalf("heartbeat on A's accepted unit: %+v", r)
		}
		if r := hb(h5, w4b.ID); r.Abort {
			t.Fatalf("heartbeat on a unit still running in the closed round: %+v", r)
		}
		if r := e.upload(h5, w4b.ID, encode(t, delta(ps, 6, 0.01), weights.F32), nil); r.status != http.StatusConflict || r.code() != protocol.CodeLate {
			t.Fatalf("result of a unit of the closed round: %d %s, want 409 late", r.status, r.body)
		}
		wn := e.work(a)
		if wn == nil || wn.Round != 1 {
			t.Fatalf("round 1 unit: %+v", wn)
		}
		if got := act(protocol.ActionStop, http.StatusOK); got.State != protocol.StateStopped {
			t.Fatalf("after stop: %s", got.State)
		}
		if r := hb(a, wn.ID); !r.Abort || r.Reason != "campaign_stopped" {
			t.Fatalf("heartbeat after stop: %+v", r)
		}
		if r := e.upload(a, wn.ID, encode(t, delta(ps, 5, 0.01), weights.F32), nil); r.status != http.StatusConflict || r.code() != protocol.CodeWUClosed {
			t.Fatalf("upload after stop: %d %s", r.status, r.body)
		}
		act(protocol.ActionResume, http.StatusConflict)
		// Metrics.
		resp, err := http.Get(e.ts.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		m := sb.String()
		for _, want := range []string{`texgrid_results_total{outcome="accepted"} 3`, `texgrid_rounds_closed_total 1`, `texgrid_results_total{outcome="late"} 1`,
			`texgrid_work_units{state="aborted"}`, `texgrid_rounds{state="closed"} 1`, `texgrid_rpc_duration_seconds_bucket{code="200",method="PUT",route="/api/v1/work/:id/result"`} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		var st protocol.Status
		e.must(e.do("GET", protocol.APIPrefix+"/status", "", nil, nil), http.StatusOK, &st)
		if st.ProtocolVersion != protocol.Version || st.Campaigns != 1 || st.Hosts != 4 { // five attached, one detached
			t.Fatalf("status: %+v", st)
		}
	})
}
