package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// report posts a failure report for a work unit.
func (e *env) report(token string, wuID int64, req any) reply {
	e.t.Helper()
	return e.do("POST", protocol.WorkPath(wuID, "failure"), token, req, nil)
}

func (e *env) hostSelf(token string) protocol.HostInfo {
	e.t.Helper()
	var h protocol.HostInfo
	e.must(e.do("GET", protocol.HostSelfPath, token, nil, nil), http.StatusOK, &h)
	return h
}

// TestFailureReport: a host that reports a diverged unit has it recorded against the
// unit, the host and the round (with a failed results row); the slot goes to another
// host with the same seed, never back to the one that failed it, until max_attempts;
// a replay is answered again; bad reports change nothing; aborted, accepted and other
// hosts' units are refused; a version-1 client still trains and uploads.
func TestFailureReport(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 2, Rounds: 2, MaxAttempts: 2, Start: true})
		a, b, h3, h4 := e.host(1), e.host(1), e.host(1), e.host(1)
		wa, wb := e.work(a), e.work(b)
		if wa == nil || wb == nil {
			t.Fatal("two hosts did not get the two units")
		}
		diverged := protocol.FailureRequest{Reason: protocol.FailureDiverged, Message: "loss is NaN at epoch 0 batch 3", Progress: 0.25}

		// Bad reports are refused and record nothing.
		bad := []struct {
			name   string
			token  string
			id     int64
			body   any
			status int
			code   string
			says   string
		}{
			{"unknown reason", a, wa.ID, protocol.FailureRequest{Reason: "bored"}, http.StatusBadRequest, protocol.CodeBadRequest, "bored"},
			{"no reason", a, wa.ID, protocol.FailureRequest{}, http.StatusBadRequest, protocol.CodeBadRequest, "reason"},
			{"message too long", a, wa.ID, protocol.FailureRequest{Reason: protocol.FailureDiverged, Message: strings.Repeat("x", 1001)}, http.StatusBadRequest, protocol.CodeBadRequest, "message"},
			{"progress over one", a, wa.ID, protocol.FailureRequest{Reason: protocol.FailureDiverged, Progress: 1.5}, http.StatusBadRequest, protocol.CodeBadRequest, "progress"},
			{"NaN loss as a number", a, wa.ID, `{"reason":"diverged","loss":NaN}`, http.StatusBadRequest, protocol.CodeBadRequest, "malformed JSON"},
			{"another host's unit", b, wa.ID, diverged, http.StatusForbidden, protocol.CodeForbidden, "another host"},
			{"unknown unit", a, 99999, diverged, http.StatusNotFound, protocol.CodeNotFound, "does not exist"},
		}
		for _, tc := range bad {
			r := e.report(tc.token, tc.id, tc.body)
			if r.status != tc.status || r.code() != tc.code || !strings.Contains(string(r.body), tc.says) {
				t.Errorf("%s: HTTP %d %s, want %d %s naming %q", tc.name, r.status, r.body, tc.status, tc.code, tc.says)
			}
		}
		if rs := e.rounds(c.ID); rs[0].Failed != 0 {
			t.Fatalf("bad reports were counted: %+v", rs[0])
		}

		// A's unit diverged: recorded, the slot goes to another host.
		var fr protocol.FailureResponse
		e.must(e.report(a, wa.ID, diverged), http.StatusOK, &fr)
		if fr.Round != 0 || !fr.Reissued || fr.Replayed {
			t.Fatalf("failure report answered %+v, want round 0, reissued", fr)
		}
		e.must(e.report(a, wa.ID, diverged), http.StatusOK, &fr)
		if !fr.Replayed {
			t.Fatalf("a second report answered %+v, want replayed", fr)
		}
		if rs := e.rounds(c.ID); rs[0].Failed != 1 || rs[0].State != "open" {
			t.Fatalf("round after one failure: %+v, want open with 1 failed", rs[0])
		}
		if h := e.hostSelf(a); h.ResultsFailed != 1 || h.ResultsInvalid != 0 {
			t.Fatalf("host A after its failure: %+v", h)
		}
		var row store.Result
		if err := e.srv.Sched.DB().R.Where("work_unit_id = ?", wa.ID).Take(&row).Error; err != nil {
			t.Fatal(err)
		}
		if row.Outcome != store.OutcomeFailed || row.Reason != "diverged: loss is NaN at epoch 0 batch 3" || row.SHA256 != "" {
			t.Fatalf("results row of the failed unit: %+v", row)
		}
		if w := e.work(a); w != nil {
			t.Fatalf("host A got unit %d (seed %d) of its own failed slot or a full round", w.ID, w.Seed)
		}
		w3 := e.work(h3)
		if w3 == nil || w3.Seed != wa.Seed {
			t.Fatalf("after the failure host 3 got %+v, want a reissue of slot 0 (seed %d)", w3, wa.Seed)
		}
		// The reissue fails too: with max_attempts 2 the slot is spent.
		e.must(e.report(h3, w3.ID, diverged), http.StatusOK, &fr)
		if fr.Reissued {
			t.Fatalf("the second failure of slot 0 answered %+v, want not reissued (max_attempts 2)", fr)
		}
		if w := e.work(h4); w != nil {
			t.Fatalf("slot 0 issued a third time (unit %d) with max_attempts 2", w.ID)
		}
		// A unit whose result is in cannot be reported failed; its result stands.
		ps := params(t, wb)
		e.must(e.upload(b, wb.ID, encode(t, delta(ps, 1, 0.01), weights.F32), nil), http.StatusOK, nil)
		if r := e.report(b, wb.ID, diverged); r.status != http.StatusConflict || r.code() != protocol.CodeConflict {
			t.Fatalf("report of an accepted unit: HTTP %d %s, want 409 conflict", r.status, r.body)
		}
		if rs := e.rounds(c.ID); rs[0].Failed != 2 || rs[0].Accepted != 1 || rs[0].Issued != 3 {
			t.Fatalf("round 0: %+v, want 2 failed, 1 accepted, 3 issues", rs[0])
		}

		// Stop: the open units are aborted, and their failure reports refused.
		c2 := e.createCampaign(protocol.CampaignSpec{Name: "second", Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 1, Start: true})
		w5 := e.work(h4)
		if w5 == nil || w5.CampaignID != c2.ID {
			t.Fatalf("host 4 got %+v, want a unit of campaign %d", w5, c2.ID)
		}
		e.must(e.do("POST", fmt.Sprintf("%s/campaigns/%d/stop", protocol.APIPrefix, c2.ID), e.researcher, nil, nil), http.StatusOK, nil)
		if r := e.report(h4, w5.ID, diverged); r.status != http.StatusConflict || r.code() != protocol.CodeWUClosed {
			t.Fatalf("report of a stopped campaign's unit: HTTP %d %s, want 409 wu_closed", r.status, r.body)
		}
		if h := e.hostSelf(h4); h.ResultsFailed != 0 {
			t.Fatalf("a refused report was counted on the host: %+v", h)
		}

		// A version-1 client (it never reports failures) still trains and uploads.
		c3 := e.createCampaign(protocol.CampaignSpec{Name: "third", Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 1, Start: true})
		v1 := map[string]string{protocol.HeaderVersion: "1"}
		h5 := e.host(1)
		var wr protocol.WorkResponse
		e.must(e.do("POST", protocol.APIPrefix+"/work", h5, protocol.WorkRequest{Threads: 1}, v1), http.StatusOK, &wr)
		if wr.WorkUnit == nil || wr.WorkUnit.CampaignID != c3.ID {
			t.Fatalf("a version-1 client got %+v, want a unit of campaign %d", wr.WorkUnit, c3.ID)
		}
		var hb protocol.HeartbeatResponse
		e.must(e.do("POST", protocol.WorkPath(wr.WorkUnit.ID, "heartbeat"), h5, protocol.HeartbeatRequest{Progress: 0.5}, v1), http.StatusOK, &hb)
		if hb.Abort {
			t.Fatalf("a version-1 heartbeat on a live unit: %+v", hb)
		}
		body := encode(t, delta(ps, 2, 0.01), weights.F32)
		hdr := map[string]string{protocol.HeaderVersion: "1", protocol.HeaderSHA256: shaHex(body), protocol.HeaderSamples: "20",
			protocol.HeaderLoss: "0.5", "Content-Type": "application/octet-stream"}
		var res protocol.ResultResponse
		e.must(e.do("PUT", protocol.WorkPath(wr.WorkUnit.ID, "result"), h5, body, hdr), http.StatusOK, &res)
		if res.Outcome != protocol.OutcomeAccepted {
			t.Fatalf("a version-1 upload: %+v", res)
		}
	})
}
