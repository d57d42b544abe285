package server_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// TestQuorumCloses: quorum 0.8 over 10 work units closes the round on the 8th valid
// result, the 9th and 10th are answered late, and W(1) = W(0) + mean(8 deltas) exactly.
func TestQuorumCloses(t *testing.T) {
	for _, model := range []string{"tiny", "small"} { // deltas kept in rows, and in blob files
		t.Run(model, func(t *testing.T) { testQuorumCloses(t, model) })
	}
}

func testQuorumCloses(t *testing.T, model string) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.8, WorkUnitsPerRound: 10, Rounds: 2, Model: model, Start: true})
		if c.State != protocol.StateRunning {
			t.Fatalf("campaign state %s, want running", c.State)
		}
		tokens := make([]string, 10)
		wus := make([]*protocol.WorkUnit, 10)
		slots := map[uint64]bool{}
		for i := range tokens {
			tokens[i] = e.host(float64(10 * (i + 1)))
		}
		for i := range tokens {
			wus[i] = e.work(tokens[i])
			if wus[i] == nil {
				t.Fatalf("host %d got no work unit", i)
			}
			if wus[i].Round != 0 || wus[i].BaseModel.SHA256 != c.ModelSHA256 {
				t.Fatalf("work unit %d: round %d base %s, want round 0 base %s", i, wus[i].Round, wus[i].BaseModel.SHA256, c.ModelSHA256)
			}
			if n := wus[i].FragmentCount; n < 10 || n > 20 {
				t.Fatalf("work unit %d has %d fragments, outside the campaign range 10..20", i, n)
			}
			slots[wus[i].Seed] = true
		}
		if len(slots) != 10 {
			t.Fatalf("10 work units have %d distinct seeds", len(slots))
		}
		if wus[0].FragmentCount >= wus[9].FragmentCount {
			t.Fatalf("the slowest host got %d fragments, the fastest %d: slow hosts must get smaller units", wus[0].FragmentCount, wus[9].FragmentCount)
		}
		// An 11th host finds nothing to do; a host asking again gets its own unit back.
		if w := e.work(e.host(1)); w != nil {
			t.Fatalf("an 11th host got work unit %d of a 10-unit round", w.ID)
		}
		if again := e.work(tokens[3]); again == nil || again.ID != wus[3].ID {
			t.Fatalf("host 3 asking again got %+v, want its unit %d", again, wus[3].ID)
		}
		w0 := decodeModel(t, e.blob(tokens[0], c.ModelSHA256))
		ps := params(t, wus[0])
		var deltas [][]tensor.Named
		for i := 0; i < 10; i++ {
			d := delta(ps, uint64(100+i), 0.01)
			body := encode(t, d, weights.F32)
			r := e.upload(tokens[i], wus[i].ID, body, nil)
			rounds := e.rounds(c.ID)
			switch {
			case i < 7:
				var res protocol.ResultResponse
				e.must(r, http.StatusOK, &res)
				if res.Outcome != protocol.OutcomeAccepted || res.Credit <= 0 {
					t.Fatalf("result %d: %+v, want accepted with credit", i, res)
				}
				if len(rounds) != 1 || rounds[0].State != "open" || rounds[0].Accepted != i+1 {
					t.Fatalf("after result %d: rounds %+v", i, rounds)
				}
				deltas = append(deltas, d)
			case i == 7:
				e.must(r, http.StatusOK, nil)
				deltas = append(deltas, d)
				if len(rounds) != 2 || rounds[0].State != "closed" || rounds[0].Accepted != 8 || rounds[0].Needed != 8 || rounds[1].State != "open" {
					t.Fatalf("the 8th result did not close round 0: %+v", rounds)
				}
			default:
				if r.status != http.StatusConflict || r.code() != protocol.CodeLate {
					t.Fatalf("result %d: HTTP %d %s, want 409 late", i, r.status, r.body)
				}
				if rounds[0].Late != i-7 || rounds[0].Accepted != 8 {
					t.Fatalf("after late result %d: %+v", i, rounds[0])
				}
			}
		}
		c = e.campaign(c.ID)
		if c.Round != 1 || c.ModelSHA256 == wus[0].BaseModel.SHA256 {
			t.Fatalf("campaign after round 0: round %d model %s", c.Round, c.ModelSHA256)
		}
		checkModel(t, decodeModel(t, e.blob(tokens[0], c.ModelSHA256)), expectMean(w0, deltas))

		// Replays answer the original outcome and merge nothing.
		r := e.upload(tokens[2], wus[2].ID, encode(t, deltas[2], weights.F32), nil)
		var res protocol.ResultResponse
		e.must(r, http.StatusOK, &res)
		if !res.Replayed || res.Outcome != protocol.OutcomeAccepted {
			t.Fatalf("replay of an accepted result: %+v", res)
		}
		r = e.upload(tokens[9], wus[9].ID, encode(t, delta(ps, 109, 0.01), weights.F32), nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeLate {
			t.Fatalf("replay of a late result: HTTP %d %s", r.status, r.body)
		}
		if rs := e.rounds(c.ID); rs[0].Accepted != 8 || rs[0].Late != 2 || rs[0].ResultModel != c.ModelSHA256 {
			t.Fatalf("replays changed round 0: %+v", rs[0])
		}
		// Round 1 is issued on W(1); finishing it finishes the campaign.
		var ws []*protocol.WorkUnit
		for i := 0; i < 8; i++ {
			w := e.work(tokens[i])
			if w == nil || w.Round != 1 || w.BaseModel.SHA256 != c.ModelSHA256 {
				t.Fatalf("round 1 work unit for host %d: %+v", i, w)
			}
			ws = append(ws, w)
		}
		for i, w := range ws {
			e.must(e.upload(tokens[i], w.ID, encode(t, delta(ps, uint64(200+i), 0.01), weights.F32), nil), http.StatusOK, nil)
		}
		c = e.campaign(c.ID)
		if c.State != protocol.StateDone || c.Round != 2 {
			t.Fatalf("campaign after its last round: state %s round %d", c.State, c.Round)
		}
		if w := e.work(tokens[0]); w != nil {
			t.Fatalf("a done campaign issued work unit %d", w.ID)
		}
	})
}

// TestDeadlineReissue: a unit past its deadline is reissued to another host with the
// same seed; the late original is still welcome while the round is open; a round past
// its deadline is reported stuck.
func TestDeadlineReissue(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.9, WorkUnitsPerRound: 2, Rounds: 1, MaxAttempts: 2,
			WUDeadline: protocol.Duration(time.Minute), RoundDeadline: protocol.Duration(10 * time.Minute), Start: true})
		a, b, h3 := e.host(5), e.host(5), e.host(5)
		wa, wb := e.work(a), e.work(b)
		if wa == nil || wb == nil {
			t.Fatal("two hosts did not get the two units")
		}
		if w := e.work(h3); w != nil {
			t.Fatalf("a third host got unit %d before any deadline", w.ID)
		}
		e.clock.Add(61 * time.Second)
		w3 := e.work(h3)
		if w3 == nil || w3.Seed != wa.Seed || w3.ID == wa.ID {
			t.Fatalf("after the deadline the third host got %+v, want a reissue of slot 0 (seed %d)", w3, wa.Seed)
		}
		// A asks again: its own unit expired; it may take slot 1 (B's expired unit) but never
		// its own slot again.
		wa2 := e.work(a)
		if wa2 == nil || wa2.Seed != wb.Seed {
			t.Fatalf("host A asking again got %+v, want slot 1 (seed %d)", wa2, wb.Seed)
		}
		ps := params(t, wa)
		// A's expired original arrives: the round is open and slot 0 has no result, so it counts.
		var res protocol.ResultResponse
		e.must(e.upload(a, wa.ID, encode(t, delta(ps, 1, 0.01), weights.F32), nil), http.StatusOK, &res)
		if res.Outcome != protocol.OutcomeAccepted {
			t.Fatalf("expired original's result: %+v", res)
		}
		// The reissue of slot 0 finishing later is not merged a second time.
		r := e.upload(h3, w3.ID, encode(t, delta(ps, 2, 0.01), weights.F32), nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeLate {
			t.Fatalf("second result for slot 0: HTTP %d %s, want 409 late", r.status, r.body)
		}
		// Max attempts: slot 1 had B and A; nobody else gets it after A's deadline.
		e.clock.Add(61 * time.Second)
		if w := e.work(e.host(5)); w != nil {
			t.Fatalf("slot 1 issued a third time (unit %d) with max_attempts 2", w.ID)
		}
		e.clock.Add(10 * time.Minute)
		if err := e.srv.Sched.Tick(t.Context()); err != nil {
			t.Fatal(err)
		}
		rs := e.rounds(c.ID)
		if rs[0].State != "stuck" || rs[0].Accepted != 1 || rs[0].Needed != 2 || rs[0].Issued != 4 {
			t.Fatalf("round after its deadline: %+v, want stuck with 1 of 2 accepted and 4 issues", rs[0])
		}
		if c = e.campaign(c.ID); c.Message == "" {
			t.Fatal("a stuck round left no message on the campaign")
		}
		// B's long-expired unit still completes the stuck round.
		e.must(e.upload(b, wb.ID, encode(t, delta(ps, 3, 0.01), weights.F32), nil), http.StatusOK, nil)
		if c = e.campaign(c.ID); c.State != protocol.StateDone {
			t.Fatalf("campaign after the stuck round reached quorum: %s", c.State)
		}
	})
}

// TestRestartRecovery: the server closed mid-round and reopened on the same data keeps
// every acknowledged result, merges each once, and removes stray blobs.
func TestRestartRecovery(t *testing.T) {
	for _, model := range []string{"tiny", "small"} { // deltas kept in rows, and in blob files
		t.Run(model, func(t *testing.T) { testRestartRecovery(t, model) })
	}
}

func testRestartRecovery(t *testing.T, model string) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 3, Model: model, Start: true})
		toks := []string{e.host(1), e.host(2), e.host(3), e.host(4)}
		var wus []*protocol.WorkUnit
		for _, tok := range toks {
			wus = append(wus, e.work(tok))
		}
		ps := params(t, wus[0])
		w0 := decodeModel(t, e.blob(toks[0], c.ModelSHA256))
		var deltas [][]tensor.Named
		for i := 0; i < 2; i++ {
			d := delta(ps, uint64(i), 0.02)
			deltas = append(deltas, d)
			e.must(e.upload(toks[i], wus[i].ID, encode(t, d, weights.F32), nil), http.StatusOK, nil)
		}
		// A stray blob, as left by an upload whose transaction never committed.
		stray, err := e.srv.Blobs.Put([]byte("stray"))
		if err != nil {
			t.Fatal(err)
		}
		e.restart()
		if e.srv.Blobs.Has(stray) {
			t.Fatal("recovery kept a blob no row names")
		}
		if rs := e.rounds(c.ID); rs[0].Accepted != 2 || rs[0].State != "open" {
			t.Fatalf("after restart: %+v", rs[0])
		}
		// Replay of an acknowledged result after the restart: same answer, not counted again.
		var res protocol.ResultResponse
		e.must(e.upload(toks[0], wus[0].ID, encode(t, deltas[0], weights.F32), nil), http.StatusOK, &res)
		if !res.Replayed {
			t.Fatalf("replay after restart: %+v", res)
		}
		if again := e.work(toks[2]); again == nil || again.ID != wus[2].ID {
			t.Fatalf("host 2 after restart got %+v, want its unit %d", again, wus[2].ID)
		}
		d := delta(ps, 2, 0.02)
		deltas = append(deltas, d)
		e.must(e.upload(toks[2], wus[2].ID, encode(t, d, weights.F32), nil), http.StatusOK, nil)
		rs := e.rounds(c.ID)
		if rs[0].State != "closed" || rs[0].Accepted != 3 {
			t.Fatalf("round 0 after the third result: %+v", rs[0])
		}
		e.restart()
		c = e.campaign(c.ID)
		checkModel(t, decodeModel(t, e.blob(toks[0], c.ModelSHA256)), expectMean(w0, deltas))
		if c.Round != 1 || c.State != protocol.StateRunning {
			t.Fatalf("campaign after restart: round %d state %s", c.Round, c.State)
		}
	})
}

// TestOldProtocol: clients below MinVersion get 426 naming the version to install.
func TestOldProtocol(t *testing.T) {
	e := newEnv(t, func(t *testing.T, dir string) string { return dir + "/db" })
	r := e.do("POST", protocol.APIPrefix+"/work", e.host(1), protocol.WorkRequest{}, map[string]string{protocol.HeaderVersion: fmt.Sprint(protocol.MinVersion - 1)})
	if r.status != http.StatusUpgradeRequired || r.code() != protocol.CodeUpgradeRequired {
		t.Fatalf("old protocol: HTTP %d %s", r.status, r.body)
	}
	if want := fmt.Sprintf("protocol %d", protocol.Version); !contains(string(r.body), want) {
		t.Fatalf("426 message %s does not say %q", r.body, want)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestRetryHint: a host that finds every unit out is told to come back after a quarter
// of the previous round's duration (half the current round's age in round 0), at least
// a second and at most the configured RetryAfter, so it joins the next round.
func TestRetryHint(t *testing.T) {
	e := newEnv(t, func(t *testing.T, dir string) string { return dir + "/db" })
	e.retryAfter = time.Minute
	e.restart()
	c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 3, Start: true})
	a, b := e.host(1), e.host(1)
	ask := func() protocol.WorkResponse {
		var w protocol.WorkResponse
		e.must(e.do("POST", protocol.APIPrefix+"/work", b, protocol.WorkRequest{}, nil), http.StatusOK, &w)
		return w
	}
	wa := e.work(a)
	e.clock.Add(10 * time.Second)
	if w := ask(); w.WorkUnit != nil || w.RetryAfterSeconds != 5 {
		t.Fatalf("round 0, 10 s old: %+v, want retry after 5 s", w)
	}
	e.clock.Add(30 * time.Second)
	e.must(e.upload(a, wa.ID, encode(t, delta(params(t, wa), 1, 0.01), weights.F32), nil), http.StatusOK, nil)
	if e.work(a) == nil {
		t.Fatal("round 1 issued nothing")
	}
	if w := ask(); w.RetryAfterSeconds != 10 {
		t.Fatalf("after a 40 s round: %+v, want retry after 10 s", w)
	}
	e.must(e.do("POST", fmt.Sprintf("%s/campaigns/%d/pause", protocol.APIPrefix, c.ID), e.researcher, nil, nil), http.StatusOK, nil)
	if w := ask(); w.RetryAfterSeconds != 60 {
		t.Fatalf("no running campaign: %+v, want the configured 60 s", w)
	}
}

// TestSecondUnitWaits: a host may take a second unit of a round only while enough slots
// remain for the active hosts that have none yet; a slow host is not crowded out.
func TestSecondUnitWaits(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		e.createCampaign(protocol.CampaignSpec{Quorum: 0.8, WorkUnitsPerRound: 4, Rounds: 2, Start: true})
		a, b, c := e.host(3), e.host(2), e.host(1)
		w1 := e.work(a)
		ps := params(t, w1)
		e.must(e.upload(a, w1.ID, encode(t, delta(ps, 1, 0.01), weights.F32), nil), http.StatusOK, nil)
		w2 := e.work(a) // 3 slots left, 2 hosts waiting: a second unit is fine
		if w2 == nil || w2.Seed == w1.Seed {
			t.Fatalf("host A's second unit: %+v", w2)
		}
		e.must(e.upload(a, w2.ID, encode(t, delta(ps, 2, 0.01), weights.F32), nil), http.StatusOK, nil)
		if w := e.work(a); w != nil { // 2 slots left for 2 waiting hosts
			t.Fatalf("host A took unit %d from the hosts still waiting", w.ID)
		}
		if e.work(b) == nil || e.work(c) == nil {
			t.Fatal("a waiting host found no unit")
		}
	})
}

// TestLRDecay: a campaign with learning_rate 0.01 and lr_decay 0.5 issues round r's work
// units (rounds count from 0) with learning_rate 0.01 x 0.5^r, computed by the server,
// with lr_decay echoed for the record; the campaign keeps the base rate, across a
// restart. A campaign without lr_decay keeps a constant rate.
func TestLRDecay(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 3, Start: true,
			Hyper: protocol.Hyper{LearningRate: 0.01, LRDecay: 0.5}})
		flat := e.createCampaign(protocol.CampaignSpec{Name: "flat", Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 3, Start: true,
			Hyper: protocol.Hyper{LearningRate: 0.02}})
		if c.Spec.Hyper.LearningRate != 0.01 || c.Spec.Hyper.LRDecay != 0.5 {
			t.Fatalf("campaign hyper %+v, want learning_rate 0.01 lr_decay 0.5", c.Spec.Hyper)
		}
		a, b := e.host(1), e.host(1)
		want := []float64{0.01, 0.005, 0.0025}
		for round, lr := range want {
			if round == 2 {
				e.restart() // the decay comes from the stored spec, not from memory
			}
			// The decaying campaign is older, so the first host to ask takes its only unit;
			// the second gets the other campaign's.
			w, fw := e.work(a), e.work(b)
			if w == nil || w.CampaignID != c.ID || w.Round != round {
				t.Fatalf("round %d: got work unit %+v, want one of campaign %d round %d", round, w, c.ID, round)
			}
			if w.Hyper.LearningRate != lr || w.Hyper.LRDecay != 0.5 {
				t.Fatalf("round %d: hyper %+v, want learning_rate %g and lr_decay 0.5", round, w.Hyper, lr)
			}
			if fw == nil || fw.CampaignID != flat.ID || fw.Round != round || fw.Hyper.LearningRate != 0.02 || fw.Hyper.LRDecay != 0 {
				t.Fatalf("round %d of the campaign without decay: %+v", round, fw)
			}
			e.must(e.upload(a, w.ID, encode(t, delta(params(t, w), uint64(round), 0.01), weights.F32), nil), http.StatusOK, nil)
			e.must(e.upload(b, fw.ID, encode(t, delta(params(t, fw), uint64(round), 0.01), weights.F32), nil), http.StatusOK, nil)
		}
		if c = e.campaign(c.ID); c.State != protocol.StateDone || c.Spec.Hyper.LearningRate != 0.01 {
			t.Fatalf("campaign after its rounds: state %s hyper %+v", c.State, c.Spec.Hyper)
		}
	})
}

// TestCloseFinishedLater: a round close is two steps, the quorum's last result closing
// the round in its own transaction and the fold into W(r+1) after it. When the fold
// fails (here: the base model's blob is missing), the result is still acknowledged and
// kept; the next Tick, or Recover after a restart, finishes the close with
// W(r+1) = W(r) + mean(deltas) exactly, and nothing is merged twice.
func TestCloseFinishedLater(t *testing.T) {
	for _, model := range []string{"tiny", "small"} { // deltas kept in rows, and in blob files
		for _, finish := range []string{"tick", "restart"} {
			t.Run(model+"/"+finish, func(t *testing.T) { testCloseFinishedLater(t, model, finish) })
		}
	}
}

func testCloseFinishedLater(t *testing.T, model, finish string) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 2, Model: model, Start: true})
		toks := []string{e.host(1), e.host(2), e.host(3), e.host(4)}
		var wus []*protocol.WorkUnit
		for _, tok := range toks {
			wus = append(wus, e.work(tok))
		}
		ps := params(t, wus[0])
		w0 := decodeModel(t, e.blob(toks[0], c.ModelSHA256))
		var deltas [][]tensor.Named
		for i := 0; i < 3; i++ {
			if i == 2 {
				hideBlob(t, e, c.ModelSHA256)
			}
			d := delta(ps, uint64(10+i), 0.02)
			deltas = append(deltas, d)
			var res protocol.ResultResponse
			e.must(e.upload(toks[i], wus[i].ID, encode(t, d, weights.F32), nil), http.StatusOK, &res)
			if res.Outcome != protocol.OutcomeAccepted {
				t.Fatalf("result %d: %+v", i, res)
			}
		}
		rs := e.rounds(c.ID)
		if len(rs) != 1 || rs[0].State != "closed" || rs[0].ResultModel != "" || rs[0].Accepted != 3 {
			t.Fatalf("after a failed fold: rounds %+v, want round 0 closed with 3 accepted and no model yet", rs)
		}
		if w := e.work(toks[3]); w != nil && w.Round == 0 {
			t.Fatalf("host 3 got work unit %d of the closed round", w.ID)
		}
		// The fourth result arrives while the close is pending: late, not merged.
		r := e.upload(toks[3], wus[3].ID, encode(t, delta(ps, 13, 0.02), weights.F32), nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeLate {
			t.Fatalf("result for a closing round: HTTP %d %s, want 409 late", r.status, r.body)
		}
		unhideBlob(t, e, c.ModelSHA256)
		if finish == "tick" {
			if err := e.srv.Sched.Tick(t.Context()); err != nil {
				t.Fatal(err)
			}
		} else {
			e.restart()
		}
		c = e.campaign(c.ID)
		rs = e.rounds(c.ID)
		if c.Round != 1 || len(rs) != 2 || rs[0].ResultModel != c.ModelSHA256 || rs[1].State != "open" || rs[0].Accepted != 3 || rs[0].Late != 1 {
			t.Fatalf("after the close was finished: campaign round %d model %s, rounds %+v", c.Round, c.ModelSHA256, rs)
		}
		checkModel(t, decodeModel(t, e.blob(toks[0], c.ModelSHA256)), expectMean(w0, deltas))
		// A second pass finds nothing to do.
		if err := e.srv.Sched.Tick(t.Context()); err != nil {
			t.Fatal(err)
		}
		if again := e.campaign(c.ID); again.Round != 1 || again.ModelSHA256 != c.ModelSHA256 {
			t.Fatalf("a second tick changed the campaign: %+v", again)
		}
	})
}

// hideBlob moves a blob out of the store, so reading it fails; unhideBlob puts it back.
func hideBlob(t *testing.T, e *env, sha string) {
	t.Helper()
	p, err := e.srv.Blobs.Path(sha)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, filepath.Join(e.dataDir, "hidden-"+sha)); err != nil {
		t.Fatal(err)
	}
}

func unhideBlob(t *testing.T, e *env, sha string) {
	t.Helper()
	p, err := e.srv.Blobs.Path(sha)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(e.dataDir, "hidden-"+sha), p); err != nil {
		t.Fatal(err)
	}
}
