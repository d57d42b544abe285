package server_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// TestSameSeedCampaigns: two campaigns with the same seed and model start from the
// same W(0) blob, which both share: the second is created (no 500), each issues its
// own units on it, closing one campaign's round leaves the other's base model served,
// across a restart, and each round folds into its own W(1).
func TestSameSeedCampaigns(t *testing.T) {
	cases := []struct {
		name   string
		second protocol.CampaignSpec
	}{
		{"identical specs", protocol.CampaignSpec{Name: "first", Seed: 42, Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 2}},
		{"another name, started at creation", protocol.CampaignSpec{Name: "second", Seed: 42, Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 3, Start: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
				e := newEnv(t, dsn)
				a := e.createCampaign(protocol.CampaignSpec{Name: "first", Seed: 42, Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 2, Start: true})
				r := e.do("POST", protocol.APIPrefix+"/campaigns", e.researcher, withTestDefaults(tc.second), nil)
				var b protocol.Campaign
				e.must(r, http.StatusCreated, &b)
				if b.ModelSHA256 != a.ModelSHA256 {
					t.Fatalf("same seed and model gave W(0) %s and %s", a.ModelSHA256, b.ModelSHA256)
				}
				if b.State != protocol.StateRunning {
					var started protocol.Campaign
					e.must(e.do("POST", fmt.Sprintf("%s/campaigns/%d/start", protocol.APIPrefix, b.ID), e.researcher, nil, nil), http.StatusOK, &started)
				}
				ha, hb := e.host(1), e.host(1)
				wa, wb := e.work(ha), e.work(hb)
				if wa == nil || wb == nil || wa.CampaignID != a.ID || wb.CampaignID != b.ID {
					t.Fatalf("units %+v and %+v, want one of campaign %d and one of %d", wa, wb, a.ID, b.ID)
				}
				if wa.BaseModel.SHA256 != a.ModelSHA256 || wb.BaseModel.SHA256 != a.ModelSHA256 {
					t.Fatalf("base models %s and %s, want the shared %s", wa.BaseModel.SHA256, wb.BaseModel.SHA256, a.ModelSHA256)
				}
				w0 := decodeModel(t, e.blob(ha, a.ModelSHA256))
				ps := params(t, wa)
				da, db := delta(ps, 1, 0.01), delta(ps, 2, 0.01)
				e.must(e.upload(ha, wa.ID, encode(t, da, weights.F32), nil), http.StatusOK, nil)
				if got := e.campaign(a.ID); got.Round != 1 {
					t.Fatalf("campaign %d after its quorum: round %d", a.ID, got.Round)
				}
				// The shared W(0) is still the other campaign's base, after a restart too.
				e.restart()
				if got := e.blob(hb, wb.BaseModel.SHA256); shaHex(got) != wb.BaseModel.SHA256 {
					t.Fatalf("the shared base model reads back with sha256 %s", shaHex(got))
				}
				e.must(e.upload(hb, wb.ID, encode(t, db, weights.F32), nil), http.StatusOK, nil)
				for _, c := range []struct {
					id int64
					d  []tensor.Named
				}{{a.ID, da}, {b.ID, db}} {
					got := e.campaign(c.id)
					if got.Round != 1 {
						t.Fatalf("campaign %d: round %d, want 1", c.id, got.Round)
					}
					checkModel(t, decodeModel(t, e.blob(ha, got.ModelSHA256)), expectMean(w0, [][]tensor.Named{c.d}))
				}
			})
		})
	}
}

// withTestDefaults fills a spec the way createCampaign does, for tests that post it
// themselves to look at the raw answer.
func withTestDefaults(cs protocol.CampaignSpec) protocol.CampaignSpec {
	cs.Dataset = testDataset
	if cs.Model == "" {
		cs.Model = "tiny"
	}
	if cs.FragmentSize == 0 {
		cs.FragmentSize = 16
	}
	if cs.FragmentsMin == 0 {
		cs.FragmentsMin, cs.FragmentsMax = 10, 20
	}
	return cs
}
