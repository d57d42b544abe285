package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// hostOf registers a host under another account key.
func (e *env) hostOf(key string) string {
	e.t.Helper()
	var r protocol.RegisterHostResponse
	e.must(e.do("POST", protocol.APIPrefix+"/hosts", "", protocol.RegisterHostRequest{AccountKey: key, Name: "h", Cores: 1, GFLOPS: 1}, nil),
		http.StatusCreated, &r)
	return r.Token
}

func (e *env) account(name string) string {
	e.t.Helper()
	_, key, err := e.srv.Sched.AddAccount(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return key
}

func (e *env) roundResults(campaign int64, round int) []protocol.ResultInfo {
	e.t.Helper()
	var rs []protocol.ResultInfo
	e.must(e.do("GET", protocol.ResultsPath(campaign, round), e.researcher, nil, nil), http.StatusOK, &rs)
	return rs
}

// TestDuplicateDeltas: byte-identical deltas in one round are merged once. Two hosts of
// one account, and a host of another account, upload the delta a first host had
// merged: each copy is answered 409 duplicate, recorded, not merged and not credited,
// and its slot goes to another host; every host involved is flagged, on its record and
// on the result rows; a replay of a copy gets the same answer. W(1) is W(0) plus the
// mean of the distinct deltas, exactly, with deltas kept in rows (tiny) and in blob
// files (small).
func TestDuplicateDeltas(t *testing.T) {
	for _, model := range []string{"tiny", "small"} {
		t.Run(model, func(t *testing.T) {
			backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
				e := newEnv(t, dsn)
				c := e.createCampaign(protocol.CampaignSpec{Model: model, Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 2, Start: true})
				other := e.account("other")
				a1, a2, b, x := e.host(1), e.host(1), e.hostOf(other), e.hostOf(other)
				w1, w2, wb, wx := e.work(a1), e.work(a2), e.work(b), e.work(x)
				if w1 == nil || w2 == nil || wb == nil || wx == nil {
					t.Fatal("four hosts did not get the four units")
				}
				w0 := decodeModel(t, e.blob(a1, c.ModelSHA256))
				ps := params(t, w1)
				d1, d2, d3 := delta(ps, 1, 0.01), delta(ps, 2, 0.01), delta(ps, 3, 0.01)
				copied := encode(t, d1, weights.F32)
				var res protocol.ResultResponse
				e.must(e.upload(a1, w1.ID, copied, nil), http.StatusOK, &res)
				if res.Outcome != protocol.OutcomeAccepted {
					t.Fatalf("the first copy: %+v", res)
				}
				for _, up := range []struct {
					name  string
					token string
					wu    *protocol.WorkUnit
				}{{"same account", a2, w2}, {"another account", x, wx}} {
					r := e.upload(up.token, up.wu.ID, copied, nil)
					if r.status != http.StatusConflict || r.code() != protocol.CodeDuplicate || !strings.Contains(string(r.body), fmt.Sprintf("work unit %d", w1.ID)) {
						t.Fatalf("a copy from %s: HTTP %d %s, want 409 duplicate naming work unit %d", up.name, r.status, r.body, w1.ID)
					}
				}
				if r := e.upload(a2, w2.ID, copied, nil); r.status != http.StatusConflict || r.code() != protocol.CodeDuplicate {
					t.Fatalf("a replayed copy: HTTP %d %s, want 409 duplicate", r.status, r.body)
				}
				rs := e.rounds(c.ID)
				if rs[0].Accepted != 1 || rs[0].Duplicates != 2 || rs[0].State != "open" {
					t.Fatalf("round after one delta and two copies: %+v, want 1 accepted, 2 duplicates, open", rs[0])
				}
				e.must(e.upload(b, wb.ID, encode(t, d2, weights.F32), nil), http.StatusOK, nil)
				// A copy's slot is trained again by a host that had none of it.
				y := e.hostOf(e.account("third"))
				wy := e.work(y)
				if wy == nil || (wy.Seed != w2.Seed && wy.Seed != wx.Seed) {
					t.Fatalf("a fresh host got %+v, want a reissue of a copied slot", wy)
				}
				e.must(e.upload(y, wy.ID, encode(t, d3, weights.F32), nil), http.StatusOK, nil)
				c = e.campaign(c.ID)
				if c.Round != 1 {
					t.Fatalf("campaign after three distinct deltas: round %d", c.Round)
				}
				checkModel(t, decodeModel(t, e.blob(a1, c.ModelSHA256)), expectMean(w0, [][]tensor.Named{d1, d2, d3}))

				rs = e.rounds(c.ID)
				if rs[0].Accepted != 3 || rs[0].Duplicates != 2 || rs[0].Issued != 5 {
					t.Fatalf("closed round: %+v, want 3 accepted, 2 duplicates, 5 issues", rs[0])
				}
				byWU := map[int64]protocol.ResultInfo{}
				for _, r := range e.roundResults(c.ID, 0) {
					byWU[r.WorkUnit] = r
				}
				if r := byWU[w1.ID]; r.Outcome != protocol.OutcomeAccepted || strings.Count(r.Flag, "same delta as work unit") != 2 ||
					!strings.Contains(r.Flag, fmt.Sprint(w2.ID)) || !strings.Contains(r.Flag, fmt.Sprint(wx.ID)) {
					t.Errorf("the merged copy's row: %+v, want accepted and flagged with units %d and %d", r, w2.ID, wx.ID)
				}
				for _, wu := range []*protocol.WorkUnit{w2, wx} {
					r := byWU[wu.ID]
					if r.Outcome != protocol.OutcomeDuplicate || r.Credit != 0 || r.SHA256 != shaHex(copied) ||
						!strings.Contains(r.Reason, fmt.Sprintf("work unit %d", w1.ID)) || !strings.Contains(r.Flag, fmt.Sprint(w1.ID)) {
						t.Errorf("the row of copy %d: %+v", wu.ID, r)
					}
				}
				if r := byWU[wb.ID]; r.Outcome != protocol.OutcomeAccepted || r.Flag != "" {
					t.Errorf("an honest row: %+v", r)
				}
				for _, h := range []struct {
					name           string
					token          string
					flagged, valid int
					credited       bool
				}{{"first", a1, 2, 1, true}, {"copier, same account", a2, 1, 0, false}, {"copier, another account", x, 1, 0, false}, {"honest", b, 0, 1, true}} {
					info := e.hostSelf(h.token)
					if info.ResultsFlagged != h.flagged || info.ResultsValid != h.valid || (info.Credit > 0) != h.credited {
						t.Errorf("host %s: %+v, want %d flagged, %d valid, credited %v", h.name, info, h.flagged, h.valid, h.credited)
					}
				}
			})
		})
	}
}

// TestAccountLimit: max_results_per_account bounds one account's merged results in a
// round. An account at the bound gets no more units of the round while its unit is
// live; a result over the bound (its first unit expired, then came back) is answered
// 409 account_limit, recorded and credited, not merged. Bad values are refused with a
// 400 naming the field.
func TestAccountLimit(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		bad := []struct {
			name string
			max  int
			says string
		}{
			{"negative", -1, "max_results_per_account -1 is outside 0..work_units_per_round (4)"},
			{"over the units of a round", 5, "max_results_per_account 5 is outside 0..work_units_per_round (4)"},
		}
		for _, tc := range bad {
			r := e.do("POST", protocol.APIPrefix+"/campaigns", e.researcher,
				withTestDefaults(protocol.CampaignSpec{Name: "bad", WorkUnitsPerRound: 4, MaxResultsPerAccount: tc.max}), nil)
			if r.status != http.StatusBadRequest || r.code() != protocol.CodeBadRequest || !strings.Contains(string(r.body), tc.says) {
				t.Errorf("%s: HTTP %d %s, want 400 saying %q", tc.name, r.status, r.body, tc.says)
			}
		}
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 1, MaxResultsPerAccount: 1,
			WUDeadline: protocol.Duration(time.Minute), RoundDeadline: protocol.Duration(time.Hour), Start: true})
		if c.Spec.MaxResultsPerAccount != 1 {
			t.Fatalf("campaign spec %+v lost max_results_per_account", c.Spec)
		}
		other := e.account("other")
		a1, a2, b, x := e.host(1), e.host(1), e.hostOf(other), e.hostOf(e.account("third"))
		w1 := e.work(a1)
		if w := e.work(a2); w != nil {
			t.Fatalf("a second host of an account at its bound got unit %d", w.ID)
		}
		e.clock.Add(61 * time.Second) // a1's unit is past its deadline: no longer live
		w2, wb, wx := e.work(a2), e.work(b), e.work(x)
		if w1 == nil || w2 == nil || wb == nil || wx == nil {
			t.Fatalf("units %v %v %v %v, want one for each host", w1, w2, wb, wx)
		}
		w0 := decodeModel(t, e.blob(a1, c.ModelSHA256))
		ps := params(t, w1)
		d1, d2, d3, d4 := delta(ps, 1, 0.01), delta(ps, 2, 0.01), delta(ps, 3, 0.01), delta(ps, 4, 0.01)
		e.must(e.upload(a1, w1.ID, encode(t, d1, weights.F32), nil), http.StatusOK, nil) // expired, still welcome
		r := e.upload(a2, w2.ID, encode(t, d2, weights.F32), nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeAccountLimit || !strings.Contains(string(r.body), "max_results_per_account") {
			t.Fatalf("a second result of the account: HTTP %d %s, want 409 account_limit", r.status, r.body)
		}
		if rs := e.rounds(c.ID); rs[0].Accepted != 1 || rs[0].OverLimit != 1 {
			t.Fatalf("round after the account's two results: %+v", rs[0])
		}
		e.must(e.upload(b, wb.ID, encode(t, d3, weights.F32), nil), http.StatusOK, nil)
		e.must(e.upload(x, wx.ID, encode(t, d4, weights.F32), nil), http.StatusOK, nil)
		c = e.campaign(c.ID)
		if c.State != protocol.StateDone {
			t.Fatalf("campaign after three merged results: %s", c.State)
		}
		checkModel(t, decodeModel(t, e.blob(a1, c.ModelSHA256)), expectMean(w0, [][]tensor.Named{d1, d3, d4}))
		for _, res := range e.roundResults(c.ID, 0) {
			if res.WorkUnit == w2.ID && (res.Outcome != protocol.OutcomeOverLimit || res.Credit <= 0 || !strings.Contains(res.Reason, "max_results_per_account")) {
				t.Errorf("the over-limit row: %+v, want over_limit, credited, with the reason", res)
			}
		}
		if info := e.hostSelf(a2); info.Credit <= 0 || info.ResultsValid != 1 {
			t.Errorf("the over-limit host: %+v, want credited", info)
		}
	})
}

// TestRoundResultsInput: the results listing refuses bad rounds and campaigns.
func TestRoundResultsInput(t *testing.T) {
	e := newEnv(t, func(t *testing.T, dir string) string { return dir + "/db" })
	c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 1})
	cases := []struct {
		name   string
		path   string
		status int
		says   string
	}{
		{"not a number", fmt.Sprintf("%s/campaigns/%d/rounds/x/results", protocol.APIPrefix, c.ID), http.StatusBadRequest, `x\" is not a non-negative integer`},
		{"negative", fmt.Sprintf("%s/campaigns/%d/rounds/-1/results", protocol.APIPrefix, c.ID), http.StatusBadRequest, `-1\" is not a non-negative integer`},
		{"no such round", protocol.ResultsPath(c.ID, 3), http.StatusNotFound, "no round 3"},
		{"no such campaign", protocol.ResultsPath(99, 0), http.StatusNotFound, "does not exist"},
	}
	for _, tc := range cases {
		r := e.do("GET", tc.path, e.researcher, nil, nil)
		if r.status != tc.status || !strings.Contains(string(r.body), tc.says) {
			t.Errorf("%s: HTTP %d %s, want %d saying %q", tc.name, r.status, r.body, tc.status, tc.says)
		}
	}
	if r := e.do("GET", protocol.ResultsPath(c.ID, 0), e.host(1), nil, nil); r.status != http.StatusForbidden {
		t.Errorf("a host token read the results: HTTP %d", r.status)
	}
}
