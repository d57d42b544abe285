package server_test

import (
	"context"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// expectWeighted computes W + eta x sum(w_i x d_i) / sum(w_i) the way the server
// defines it: a float64 sum in acceptance order, divided by the total weight, added to
// float64(W), rounded to float32 (eta 1 leaves the division as it is).
func expectWeighted(base map[string]*tensor.Tensor, deltas [][]tensor.Named, ws []float64) map[string][]float32 {
	out := map[string][]float32{}
	total := 0.0
	for _, w := range ws {
		total += w
	}
	for name, w := range base {
		sum := make([]float64, len(w.Data))
		for k, d := range deltas {
			for i, v := range tensor.Find(d, name).Data {
				sum[i] += ws[k] * float64(v)
			}
		}
		res := make([]float32, len(w.Data))
		for i := range res {
			res[i] = float32(float64(w.Data[i]) + sum[i]/total)
		}
		out[name] = res
	}
	return out
}

// TestAsync runs an asynchronous campaign (K = 2, a = 1, max_staleness 1) on both
// databases: results trained on older versions join the newest buffer with weight
// (1 + tau)^-1, the K-th closes the version, a restart in the middle of a filling
// buffer loses nothing, a result over max_staleness is refused as stale (recorded and
// credited, never merged, replayed the same way), and a version-1 client is given sync
// work only.
func TestAsync(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Mode: protocol.ModeAsync, BufferSize: 2, StalenessExponent: 1, MaxStaleness: 1,
			Rounds: 4, Start: true})
		if c.Spec.EvalEvery != 1 || c.Spec.ServerLR != 1 || c.Spec.ServerOptimizer != protocol.OptimizerSGD {
			t.Fatalf("async defaults: %+v", c.Spec)
		}
		a, b, h3, h4 := e.host(1), e.host(1), e.host(1), e.host(1)
		wa, wb, wc, wd := e.work(a), e.work(b), e.work(h3), e.work(h4)
		for _, w := range []*protocol.WorkUnit{wa, wb, wc, wd} {
			if w == nil || w.Round != 0 || w.Kind != protocol.KindTrain || w.BaseModel.SHA256 != c.ModelSHA256 {
				t.Fatalf("version-0 unit: %+v", w)
			}
		}
		// Every host asking gets work: there is no slot limit.
		if w5 := e.work(e.host(1)); w5 == nil {
			t.Fatal("a fifth host got no work from an asynchronous campaign")
		}
		ps := params(t, wa)
		w0 := decodeModel(t, e.blob(a, c.ModelSHA256))
		dA, dB, dC, dD := delta(ps, 1, 0.01), delta(ps, 2, 0.01), delta(ps, 3, 0.01), delta(ps, 4, 0.01)

		var res protocol.ResultResponse
		e.must(e.upload(a, wa.ID, encode(t, dA, weights.F32), nil), http.StatusOK, &res)
		if res.Outcome != protocol.OutcomeAccepted || res.Version != 0 || res.Staleness != 0 {
			t.Fatalf("first result: %+v", res)
		}
		e.must(e.upload(b, wb.ID, encode(t, dB, weights.F32), nil), http.StatusOK, &res)
		c1 := e.campaign(c.ID)
		if c1.Round != 1 {
			t.Fatalf("after K results the campaign is at version %d, want 1", c1.Round)
		}
		w1 := decodeModel(t, e.blob(a, c1.ModelSHA256))
		checkModel(t, w1, expectWeighted(w0, [][]tensor.Named{dA, dB}, []float64{1, 1}))

		// C trained on version 0, one behind: accepted into version 1's buffer, weight 1/2.
		e.must(e.upload(h3, wc.ID, encode(t, dC, weights.F32), nil), http.StatusOK, &res)
		if res.Outcome != protocol.OutcomeAccepted || res.Round != 0 || res.Version != 1 || res.Staleness != 1 {
			t.Fatalf("stale-by-one result: %+v", res)
		}
		wa2 := e.work(a)
		if wa2 == nil || wa2.Round != 1 || wa2.BaseModel.SHA256 != c1.ModelSHA256 {
			t.Fatalf("unit after the first version: %+v", wa2)
		}

		// Restart with version 1's buffer half full.
		e.restart()
		if rs := e.rounds(c.ID); len(rs) != 2 || rs[1].Accepted != 1 || rs[1].State != "open" {
			t.Fatalf("after the restart: %+v", rs)
		}
		dA2 := delta(ps, 5, 0.01)
		e.must(e.upload(a, wa2.ID, encode(t, dA2, weights.F32), nil), http.StatusOK, &res)
		c2 := e.campaign(c.ID)
		if c2.Round != 2 {
			t.Fatalf("after the second buffer the campaign is at version %d, want 2", c2.Round)
		}
		checkModel(t, decodeModel(t, e.blob(a, c2.ModelSHA256)), expectWeighted(w1, [][]tensor.Named{dC, dA2}, []float64{0.5, 1}))

		// D trained on version 0, two behind with max_staleness 1: stale.
		before := e.campaign(c.ID)
		bodyD := encode(t, dD, weights.F32)
		r := e.upload(h4, wd.ID, bodyD, nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeStale {
			t.Fatalf("stale result: HTTP %d %s", r.status, r.body)
		}
		r = e.upload(h4, wd.ID, bodyD, nil)
		if r.status != http.StatusConflict || r.code() != protocol.CodeStale {
			t.Fatalf("replayed stale result: HTTP %d %s", r.status, r.body)
		}
		rs := e.rounds(c.ID)
		if rs[2].Stale != 1 || rs[2].Accepted != 0 || e.campaign(c.ID).ModelSHA256 != before.ModelSHA256 {
			t.Fatalf("the stale result was merged or not counted: %+v", rs[2])
		}
		var info protocol.HostInfo
		e.must(e.do("GET", protocol.HostSelfPath, h4, nil, nil), http.StatusOK, &info)
		if info.ResultsValid != 1 || info.Credit <= 0 {
			t.Fatalf("the stale result was not credited: %+v", info)
		}

		// A version-1 client gets no asynchronous work, but does get synchronous work.
		v1 := map[string]string{protocol.HeaderVersion: "1"}
		var wr protocol.WorkResponse
		e.must(e.do("POST", protocol.APIPrefix+"/work", e.host(1), protocol.WorkRequest{Threads: 1}, v1), http.StatusOK, &wr)
		if wr.WorkUnit != nil {
			t.Fatalf("a version-1 client got asynchronous work: %+v", wr.WorkUnit)
		}
		sc := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 1, Start: true})
		e.must(e.do("POST", protocol.APIPrefix+"/work", e.host(1), protocol.WorkRequest{Threads: 1}, v1), http.StatusOK, &wr)
		if wr.WorkUnit == nil || wr.WorkUnit.CampaignID != sc.ID {
			t.Fatalf("a version-1 client got no synchronous work: %+v", wr)
		}
	})
}

// TestAsyncServerLR: eta_g scales the staleness-weighted mean, and eval_every skips
// the evaluation of versions between its multiples.
func TestAsyncServerLR(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Mode: protocol.ModeAsync, BufferSize: 2, ServerLR: 0.5, EvalEvery: 2, Rounds: 3, Start: true})
		a, b := e.host(1), e.host(1)
		wa, wb := e.work(a), e.work(b)
		ps := params(t, wa)
		w0 := decodeModel(t, e.blob(a, c.ModelSHA256))
		dA, dB := delta(ps, 11, 0.01), delta(ps, 12, 0.01)
		e.must(e.upload(a, wa.ID, encode(t, dA, weights.F32), nil), http.StatusOK, nil)
		e.must(e.upload(b, wb.ID, encode(t, dB, weights.F32), nil), http.StatusOK, nil)
		c1 := e.campaign(c.ID)
		got := decodeModel(t, e.blob(a, c1.ModelSHA256))
		for name, w := range w0 {
			for i := range w.Data {
				want := float64(w.Data[i]) + 0.5*(float64(tensor.Find(dA, name).Data[i])+float64(tensor.Find(dB, name).Data[i]))/2
				if d := math.Abs(float64(got[name].Data[i]) - want); d > 1e-6 {
					t.Fatalf("%s[%d] = %v, want %v", name, i, got[name].Data[i], want)
				}
			}
		}
		// With eval_every 2, version 1 (made by closing version 0) is not evaluated.
		var evalErr string
		if err := e.srv.DB.Raw("SELECT eval_error FROM rounds WHERE campaign_id = ? AND round = 0", c.ID).Scan(&evalErr).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(evalErr, "every 2 versions") {
			t.Fatalf("version 0's close is marked %q, want it skipped by eval_every", evalErr)
		}
	})
}

// TestServerMomentum: FedAvgM on synchronous rounds keeps its momentum across a
// restart: W2 = W1 + (beta x m1 + mean2) with m1 the first round's mean as stored.
func TestServerMomentum(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 2, Rounds: 3, ServerOptimizer: protocol.OptimizerMomentum,
			ServerMomentum: 0.5, Start: true})
		round := func(seed uint64) [][]tensor.Named {
			a, b := e.host(1), e.host(1)
			wa, wb := e.work(a), e.work(b)
			ps := params(t, wa)
			ds := [][]tensor.Named{delta(ps, seed, 0.01), delta(ps, seed+1, 0.01)}
			e.must(e.upload(a, wa.ID, encode(t, ds[0], weights.F32), nil), http.StatusOK, nil)
			e.must(e.upload(b, wb.ID, encode(t, ds[1], weights.F32), nil), http.StatusOK, nil)
			return ds
		}
		tok := e.host(1)
		w0 := decodeModel(t, e.blob(tok, c.ModelSHA256))
		d1 := round(21)
		c1 := e.campaign(c.ID)
		w1 := decodeModel(t, e.blob(tok, c1.ModelSHA256))
		checkModel(t, w1, expectWeighted(w0, d1, []float64{1, 1}))
		e.restart()
		d2 := round(31)
		c2 := e.campaign(c.ID)
		if c2.Round != 2 {
			t.Fatalf("campaign at round %d, want 2", c2.Round)
		}
		want := map[string][]float32{}
		for name, w := range w1 {
			out := make([]float32, len(w.Data))
			for i := range out {
				mean1 := (float64(tensor.Find(d1[0], name).Data[i]) + float64(tensor.Find(d1[1], name).Data[i])) / 2
				mean2 := (float64(tensor.Find(d2[0], name).Data[i]) + float64(tensor.Find(d2[1], name).Data[i])) / 2
				m1 := float64(float32(mean1))
				out[i] = float32(float64(w.Data[i]) + (0.5*m1 + mean2))
			}
			want[name] = out
		}
		checkModel(t, decodeModel(t, e.blob(tok, c2.ModelSHA256)), want)
		// Only the newest state is kept.
		var states []string
		if err := e.srv.DB.Raw("SELECT opt_state FROM rounds WHERE campaign_id = ? AND opt_state <> ''", c.ID).Scan(&states).Error; err != nil {
			t.Fatal(err)
		}
		if len(states) != 1 {
			t.Fatalf("%d optimizer states kept, want 1", len(states))
		}
	})
}

// TestAsyncDeadline: in asynchronous mode a unit past its deadline expires, its host
// is given a fresh unit, and the expired unit's result, if it comes after all, is still
// taken into the buffer (it is only older, not wrong).
func TestAsyncDeadline(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Mode: protocol.ModeAsync, BufferSize: 2, WUDeadline: protocol.Duration(time.Minute),
			Rounds: 2, Start: true})
		a := e.host(1)
		w1 := e.work(a)
		if again := e.work(a); again == nil || again.ID != w1.ID {
			t.Fatalf("a host asking again before its deadline got %+v, want its unit %d back", again, w1.ID)
		}
		e.clock.Add(2 * time.Minute)
		if err := e.srv.Sched.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		w2 := e.work(a)
		if w2 == nil || w2.ID == w1.ID || w2.Round != 0 {
			t.Fatalf("after the deadline: %+v, want a fresh unit of version 0", w2)
		}
		ps := params(t, w1)
		var res protocol.ResultResponse
		e.must(e.upload(a, w1.ID, encode(t, delta(ps, 41, 0.01), weights.F32), nil), http.StatusOK, &res)
		if res.Outcome != protocol.OutcomeAccepted {
			t.Fatalf("expired unit's result: %+v", res)
		}
		e.must(e.upload(a, w2.ID, encode(t, delta(ps, 42, 0.01), weights.F32), nil), http.StatusOK, &res)
		if got := e.campaign(c.ID); got.Round != 1 {
			t.Fatalf("campaign at version %d after two results with K = 2", got.Round)
		}
	})
}

// TestAsyncConcurrent: 12 hosts upload at once into an asynchronous campaign with K = 2.
// Every result is accepted into some version's buffer (none is late while the campaign
// runs, even when it waited on the row lock of a version being closed), each closed
// version folded exactly K, and each model is its base plus the staleness-weighted mean
// of exactly the results its buffer lists. On PostgreSQL this exercises the row lock.
func TestAsyncConcurrent(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Mode: protocol.ModeAsync, BufferSize: 2, MaxStaleness: 100, Rounds: 100, Start: true})
		const n = 12
		toks := make([]string, n)
		wus := make([]*protocol.WorkUnit, n)
		for i := range toks {
			toks[i] = e.host(1)
			wus[i] = e.work(toks[i])
		}
		ps := params(t, wus[0])
		deltas := map[int64][]tensor.Named{}
		bodies := make([][]byte, n)
		for i, w := range wus {
			deltas[w.ID] = delta(ps, uint64(2000+i), 0.01)
			bodies[i] = encode(t, deltas[w.ID], weights.F32)
		}
		codes, msgs := make([]int, n), make([]string, n)
		var wg sync.WaitGroup
		for i := range wus {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.upload(toks[i], wus[i].ID, bodies[i], nil)
				codes[i], msgs[i] = r.status, string(r.body)
			}()
		}
		wg.Wait()
		for i, code := range codes {
			if code != http.StatusOK {
				t.Fatalf("upload %d: HTTP %d %s", i, code, msgs[i])
			}
		}
		rs := e.rounds(c.ID)
		if len(rs) != n/2+1 {
			t.Fatalf("%d versions after %d results with K = 2: %+v", len(rs), n, rs)
		}
		for v, r := range rs[:n/2] {
			if r.State != "closed" || r.Accepted != 2 || r.Late != 0 || r.ResultModel == "" {
				t.Fatalf("version %d: %+v", v, r)
			}
			var res []struct {
				WorkUnitID int64
				Weight     float64
			}
			if err := e.srv.DB.Raw("SELECT work_unit_id, weight FROM results WHERE campaign_id = ? AND buffer_round = ? AND outcome = ? ORDER BY id",
				c.ID, v, protocol.OutcomeAccepted).Scan(&res).Error; err != nil {
				t.Fatal(err)
			}
			var ds [][]tensor.Named
			var ws []float64
			for _, x := range res {
				ds = append(ds, deltas[x.WorkUnitID])
				ws = append(ws, x.Weight)
			}
			base := decodeModel(t, e.blob(toks[0], r.BaseModel))
			checkModel(t, decodeModel(t, e.blob(toks[0], r.ResultModel)), expectWeighted(base, ds, ws))
		}
	})
}
