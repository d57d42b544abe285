package policy

import (
	"math"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
)

func TestStalenessWeight(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		tau  int
		a    float64
		want float64
	}{
		{"fresh", 0, 0.5, 1},
		{"one behind, a 0.5", 1, 0.5, 1 / math.Sqrt2},      // 2^-0.5
		{"three behind, a 0.5", 3, 0.5, 0.5},               // 4^-0.5
		{"eight behind, a 0.5", 8, 0.5, 1.0 / 3},           // 9^-0.5
		{"one behind, a 1", 1, 1, 0.5},                     // 2^-1
		{"three behind, a 2", 3, 2, 1.0 / 16},              // 4^-2
		{"tiny exponent", 3, 1e-12, 1 - 1e-12*math.Log(4)}, // ~ no discount
	}
	for _, tc := range cases {
		if got := StalenessWeight(tc.tau, tc.a); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%s: s(%d) with a=%g is %v, want %v", tc.name, tc.tau, tc.a, got, tc.want)
		}
	}
}

func TestAdmit(t *testing.T) {
	t.Parallel()
	async := Async{K: 3, A: 0.5, MaxStaleness: 2, EvalEvery: 1, Versions: 10}
	sync := Sync{Quorum: 0.75, WorkUnits: 4}
	cases := []struct {
		name string
		mode Mode
		arr  Arrival
		want Admission
	}{
		{"sync: its own open round", sync, Arrival{Base: 3, Current: 3, Open: true}, Admission{Outcome: protocol.OutcomeAccepted, Weight: 1}},
		{"sync: round closed", sync, Arrival{Base: 3, Current: 3}, Admission{Outcome: protocol.OutcomeLate}},
		{"sync: slot already merged", sync, Arrival{Base: 3, Current: 3, Open: true, SlotMerged: true}, Admission{Outcome: protocol.OutcomeLate}},
		{"sync: an older round", sync, Arrival{Base: 2, Current: 3, Open: true}, Admission{Outcome: protocol.OutcomeLate}},
		{"async: fresh", async, Arrival{Base: 5, Current: 5, Open: true}, Admission{Outcome: protocol.OutcomeAccepted, Weight: 1}},
		{"async: one behind", async, Arrival{Base: 4, Current: 5, Open: true}, Admission{Outcome: protocol.OutcomeAccepted, Staleness: 1, Weight: 1 / math.Sqrt2}},
		{"async: at max_staleness", async, Arrival{Base: 3, Current: 5, Open: true}, Admission{Outcome: protocol.OutcomeAccepted, Staleness: 2, Weight: 1 / math.Sqrt(3)}},
		{"async: over max_staleness", async, Arrival{Base: 2, Current: 5, Open: true}, Admission{Outcome: protocol.OutcomeStale, Staleness: 3}},
		{"async: campaign finished", async, Arrival{Base: 9, Current: 9}, Admission{Outcome: protocol.OutcomeLate}},
	}
	for _, tc := range cases {
		got := tc.mode.Admit(tc.arr)
		if got.Outcome != tc.want.Outcome || got.Staleness != tc.want.Staleness || math.Abs(got.Weight-tc.want.Weight) > 1e-15 {
			t.Errorf("%s: Admit(%+v) = %+v, want %+v", tc.name, tc.arr, got, tc.want)
		}
	}
}

func TestFor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name               string
		spec               protocol.CampaignSpec
		slots, needed      int
		keeps              bool
		evaluated, skipped []int // versions v whose close is evaluated or not
		err                bool
	}{
		{name: "sync default", spec: protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 5},
			slots: 4, needed: 3, evaluated: []int{0, 1, 4}},
		{name: "sync quorum 0.8 of 10", spec: protocol.CampaignSpec{Mode: protocol.ModeSync, Quorum: 0.8, WorkUnitsPerRound: 10, Rounds: 5},
			slots: 10, needed: 8, evaluated: []int{0}},
		{name: "async every third", spec: protocol.CampaignSpec{Mode: protocol.ModeAsync, BufferSize: 3, EvalEvery: 3, Rounds: 10},
			slots: Unlimited, needed: 3, keeps: true, evaluated: []int{2, 5, 8, 9}, skipped: []int{0, 1, 3, 4, 6, 7}},
		{name: "unknown", spec: protocol.CampaignSpec{Mode: "gossip"}, err: true},
	}
	for _, tc := range cases {
		m, err := For(&tc.spec)
		if (err != nil) != tc.err {
			t.Fatalf("%s: For: %v", tc.name, err)
		}
		if err != nil {
			continue
		}
		if m.Slots() != tc.slots || m.Needed() != tc.needed || m.KeepsUnits() != tc.keeps {
			t.Errorf("%s: slots %d needed %d keeps %v; want %d %d %v", tc.name, m.Slots(), m.Needed(), m.KeepsUnits(), tc.slots, tc.needed, tc.keeps)
		}
		for _, v := range tc.evaluated {
			if !m.EvaluateAfter(v) {
				t.Errorf("%s: the close of version %d is not evaluated", tc.name, v)
			}
		}
		for _, v := range tc.skipped {
			if m.EvaluateAfter(v) {
				t.Errorf("%s: the close of version %d is evaluated", tc.name, v)
			}
		}
	}
}
