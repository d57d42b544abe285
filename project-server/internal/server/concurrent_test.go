package server_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// TestConcurrentUploads: 40 hosts upload at once into a 40-unit round with quorum 0.8;
// exactly 32 are accepted and merged, 8 are late, and W(1) is W(0) plus the mean of
// exactly the accepted deltas, in the order the database accepted them. On PostgreSQL
// this exercises the round row lock.
func TestConcurrentUploads(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.8, WorkUnitsPerRound: 40, Rounds: 2, Model: "small", Start: true})
		const n = 40
		toks := make([]string, n)
		wus := make([]*protocol.WorkUnit, n)
		var wg sync.WaitGroup
		for i := range toks {
			toks[i] = e.host(1)
		}
		for i := range toks {
			wg.Add(1)
			go func() { defer wg.Done(); wus[i] = e.work(toks[i]) }()
		}
		wg.Wait()
		seeds := map[uint64]bool{}
		for i, w := range wus {
			if w == nil {
				t.Fatalf("host %d got no unit", i)
			}
			seeds[w.Seed] = true
		}
		if len(seeds) != n {
			t.Fatalf("%d concurrent requests got %d distinct slots", n, len(seeds))
		}
		ps := params(t, wus[0])
		w0 := decodeModel(t, e.blob(toks[0], c.ModelSHA256))
		deltas := map[int64][]tensor.Named{}
		bodies := make([][]byte, n)
		for i, w := range wus {
			d := delta(ps, uint64(1000+i), 0.01)
			deltas[w.ID] = d
			bodies[i] = encode(t, d, weights.F32)
		}
		codes := make([]int, n)
		for i := range wus {
			wg.Add(1)
			go func() { defer wg.Done(); codes[i] = e.upload(toks[i], wus[i].ID, bodies[i], nil).status }()
		}
		wg.Wait()
		ok, late := 0, 0
		for i, code := range codes {
			switch code {
			case http.StatusOK:
				ok++
			case http.StatusConflict:
				late++
			default:
				t.Fatalf("upload %d: HTTP %d", i, code)
			}
		}
		rs := e.rounds(c.ID)
		if ok != 32 || late != 8 || rs[0].Accepted != 32 || rs[0].Late != 8 || rs[0].State != "closed" {
			t.Fatalf("%d accepted, %d late; round %+v", ok, late, rs[0])
		}
		var ids []int64
		if err := e.srv.DB.Raw("SELECT work_unit_id FROM results WHERE outcome = ? AND round = 0 ORDER BY id", protocol.OutcomeAccepted).
			Scan(&ids).Error; err != nil {
			t.Fatal(err)
		}
		var merged [][]tensor.Named
		for _, id := range ids {
			merged = append(merged, deltas[id])
		}
		checkModel(t, decodeModel(t, e.blob(toks[0], rs[0].ResultModel)), expectMean(w0, merged))
	})
}
