package server_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// TestMedianCampaign runs a sync round and an async buffer of three results under the
// coordinate-wise median on both databases: one result is 100 x larger than the
// others, and the next model is W + the median of the three deltas at every
// coordinate, not their mean.
func TestMedianCampaign(t *testing.T) {
	for _, mode := range []string{protocol.ModeSync, protocol.ModeAsync} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testMedianCampaign(t, mode)
		})
	}
}

func testMedianCampaign(t *testing.T, mode string) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		cs := protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 3, Rounds: 2, Aggregator: protocol.AggregatorMedian, Start: true}
		if mode == protocol.ModeAsync {
			cs = protocol.CampaignSpec{Mode: mode, BufferSize: 3, Rounds: 2, Aggregator: protocol.AggregatorMedian, Start: true}
		}
		c := e.createCampaign(cs)
		if c.Spec.Aggregator != protocol.AggregatorMedian {
			t.Fatalf("campaign spec aggregator %q, want median", c.Spec.Aggregator)
		}
		a, b, h3 := e.host(1), e.host(1), e.host(1)
		wa, wb, wc := e.work(a), e.work(b), e.work(h3)
		ps := params(t, wa)
		w0 := decodeModel(t, e.blob(a, c.ModelSHA256))
		ds := [][]tensor.Named{delta(ps, 1, 0.01), delta(ps, 2, 0.01), delta(ps, 3, 1)}
		for i, up := range []struct {
			token string
			wu    *protocol.WorkUnit
		}{{a, wa}, {b, wb}, {h3, wc}} {
			var res protocol.ResultResponse
			e.must(e.upload(up.token, up.wu.ID, encode(t, ds[i], weights.F32), nil), http.StatusOK, &res)
		}
		rs := e.rounds(c.ID)
		if len(rs) == 0 || rs[0].ResultModel == "" {
			t.Fatalf("round 0 did not close: %+v", rs)
		}
		w1 := decodeModel(t, e.blob(a, rs[0].ResultModel))
		for name, w := range w0 {
			got := w1[name].Data
			for i := range w.Data {
				col := []float32{tensor.Find(ds[0], name).Data[i], tensor.Find(ds[1], name).Data[i], tensor.Find(ds[2], name).Data[i]}
				slices.Sort(col)
				want := float32(float64(w.Data[i]) + float64(col[1]))
				if got[i] != want {
					t.Fatalf("%s[%d] = %v, want W + median %v", name, i, got[i], want)
				}
			}
		}
	})
}

// TestSamplesFromWorkUnit: a result's samples are the fragments the server issued x
// the campaign's epochs. A host claiming 10^12 samples (the hostile upload of issue 14)
// or 1 sample changes nothing: the round counts what the units were.
func TestSamplesFromWorkUnit(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 2, Rounds: 2, WeightBySamples: true, Start: true})
		a, b := e.host(1), e.host(1)
		wa, wb := e.work(a), e.work(b)
		ps := params(t, wa)
		var res protocol.ResultResponse
		e.must(e.upload(a, wa.ID, encode(t, delta(ps, 1, 0.01), weights.F32), map[string]string{protocol.HeaderSamples: "1000000000000"}), http.StatusOK, &res)
		e.must(e.upload(b, wb.ID, encode(t, delta(ps, 2, 0.01), weights.F32), map[string]string{protocol.HeaderSamples: "1"}), http.StatusOK, &res)
		want := int64(wa.FragmentCount+wb.FragmentCount) * int64(wa.Hyper.Epochs)
		rs := e.rounds(c.ID)
		if len(rs) == 0 || rs[0].SamplesTrained != want {
			t.Fatalf("round 0 samples trained %+v, want %d (fragments %d + %d x %d epochs)", rs, want, wa.FragmentCount, wb.FragmentCount, wa.Hyper.Epochs)
		}
	})
}

// TestAggregatorRefused: bad aggregator settings are a 400 whose message names the
// field and what is allowed, and no campaign is created.
func TestAggregatorRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(t *testing.T, dataDir string) string { return filepath.Join(dataDir, "texgrid.db") })
	cases := []struct {
		name string
		cs   protocol.CampaignSpec
		want string
	}{
		{"unknown", protocol.CampaignSpec{Aggregator: "krum"}, `aggregator "krum": want "mean"`},
		{"beta 0.5", protocol.CampaignSpec{Aggregator: protocol.AggregatorTrimmedMean, TrimBeta: 0.5}, "trim_beta 0.5 must be in (0, 0.5)"},
		{"krum too few", protocol.CampaignSpec{Aggregator: protocol.AggregatorMultiKrum, WorkUnitsPerRound: 4, Quorum: 0.75},
			"krum_f 1 needs more than 4 results per version"},
		{"clip on the mean", protocol.CampaignSpec{ClipFactor: 2}, `clip_factor belongs to another aggregator than "mean"`},
	}
	for _, tc := range cases {
		tc.cs.Name = "x"
		r := e.do("POST", protocol.APIPrefix+"/campaigns", e.researcher, withTestDefaults(tc.cs), nil)
		var eb protocol.ErrorBody
		if json.Unmarshal(r.body, &eb) != nil || eb.Error == nil || r.status != http.StatusBadRequest ||
			eb.Error.Code != protocol.CodeBadRequest || !strings.Contains(eb.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 mentioning %q", tc.name, r.status, r.body, tc.want)
		}
	}
	var list []protocol.Campaign
	e.must(e.do("GET", protocol.APIPrefix+"/campaigns", e.researcher, nil, nil), http.StatusOK, &list)
	if len(list) != 0 {
		t.Fatalf("refused specs created %d campaigns", len(list))
	}
}
