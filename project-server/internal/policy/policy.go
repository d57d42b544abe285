// Package policy decides how a campaign turns accepted results into new model
// versions: synchronous rounds closed by a quorum, or asynchronous buffered versions
// (FedBuff) that take results trained on older versions with a staleness discount. A
// Mode holds only the decisions; the scheduler persists them, each decision inside the
// transaction that records the result it concerns.
package policy

import (
	"fmt"
	"math"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// Arrival is what a Mode needs to know about a valid result when it arrives.
type Arrival struct {
	// Base is the version (round) the work unit trained on.
	Base int
	// Current is the version whose buffer is filling: the campaign's newest version
	// that has not closed. When Open is false no version accepts results.
	Current int
	Open    bool
	// SlotMerged reports that another issue of the unit's slot in the same round was
	// already accepted (synchronous rounds reissue slots).
	SlotMerged bool
}

// Admission is a Mode's answer for an arrival.
type Admission struct {
	// Outcome is protocol.OutcomeAccepted (into the buffer of Current), OutcomeLate or
	// OutcomeStale; only accepted results are ever merged.
	Outcome string
	// Staleness is Current - Base for accepted and stale results.
	Staleness int
	// Weight is the accepted delta's weight in its version's fold.
	Weight float64
}

// Mode is how a campaign's versions are built.
type Mode interface {
	// Name is the campaign mode, protocol.ModeSync or protocol.ModeAsync.
	Name() string
	// Slots is how many work units one version issues; Unlimited for any number.
	Slots() int
	// Needed is how many accepted results close a version.
	Needed() int
	// Admit decides what a valid result becomes.
	Admit(a Arrival) Admission
	// KeepsUnits reports whether work units of a closed version stay live, their
	// results going into a later version's buffer; when false, closing a version
	// closes its unfinished units and their results are late.
	KeepsUnits() bool
	// EvaluateAfter reports whether the model the close of version v produced is
	// evaluated (the last version always is).
	EvaluateAfter(v int) bool
}

// Unlimited is Slots of a mode that issues work units without a bound per version.
const Unlimited = 1 << 30

// For returns the mode of a campaign spec with its defaults filled in.
func For(cs *protocol.CampaignSpec) (Mode, error) {
	switch cs.Mode {
	case "", protocol.ModeSync:
		return Sync{Quorum: cs.Quorum, WorkUnits: cs.WorkUnitsPerRound}, nil
	case protocol.ModeAsync:
		return Async{K: cs.BufferSize, A: cs.StalenessExponent, MaxStaleness: cs.MaxStaleness,
			EvalEvery: cs.EvalEvery, Versions: cs.Rounds}, nil
	}
	return nil, fmt.Errorf("unknown mode %q: want %q or %q", cs.Mode, protocol.ModeSync, protocol.ModeAsync)
}

// Sync is synchronous rounds: a round issues WorkUnits slots on W(r) and closes when
// ceil(Quorum x WorkUnits) results of that round are accepted; any later result of it
// is late.
type Sync struct {
	Quorum    float64
	WorkUnits int
}

// Name implements Mode.
func (Sync) Name() string { return protocol.ModeSync }

// Slots implements Mode.
func (m Sync) Slots() int { return m.WorkUnits }

// Needed implements Mode: ceil(quorum x work units), at least 1.
func (m Sync) Needed() int { return Needed(m.Quorum, m.WorkUnits) }

// Admit implements Mode: only a result of the open round whose slot was not merged yet.
func (Sync) Admit(a Arrival) Admission {
	if !a.Open || a.Base != a.Current || a.SlotMerged {
		return Admission{Outcome: protocol.OutcomeLate}
	}
	return Admission{Outcome: protocol.OutcomeAccepted, Weight: 1}
}

// KeepsUnits implements Mode.
func (Sync) KeepsUnits() bool { return false }

// EvaluateAfter implements Mode: every round.
func (Sync) EvaluateAfter(int) bool { return true }

// Needed is the quorum count: ceil(quorum x wus), at least 1.
func Needed(quorum float64, wus int) int {
	n := int(math.Ceil(quorum*float64(wus) - 1e-9))
	return max(1, min(n, wus))
}

// Async is FedBuff-style buffered asynchronous training: every unit trains on the
// newest version; a result of staleness tau = current - base <= MaxStaleness goes into
// the current version's buffer with weight s(tau) = (1 + tau)^-A, and the K-th buffered
// result closes the version. Staler results are recorded and credited, never merged.
type Async struct {
	K            int
	A            float64
	MaxStaleness int
	EvalEvery    int // evaluate every EvalEvery versions
	Versions     int // versions the campaign builds
}

// Name implements Mode.
func (Async) Name() string { return protocol.ModeAsync }

// Slots implements Mode.
func (Async) Slots() int { return Unlimited }

// Needed implements Mode: the buffer size.
func (m Async) Needed() int { return m.K }

// Admit implements Mode.
func (m Async) Admit(a Arrival) Admission {
	if !a.Open {
		return Admission{Outcome: protocol.OutcomeLate}
	}
	tau := a.Current - a.Base
	if tau > m.MaxStaleness {
		return Admission{Outcome: protocol.OutcomeStale, Staleness: tau}
	}
	return Admission{Outcome: protocol.OutcomeAccepted, Staleness: tau, Weight: StalenessWeight(tau, m.A)}
}

// StalenessWeight is s(tau) = (1 + tau)^-a.
func StalenessWeight(tau int, a float64) float64 {
	return math.Pow(1+float64(tau), -a)
}

// KeepsUnits implements Mode.
func (Async) KeepsUnits() bool { return true }

// EvaluateAfter implements Mode: the model of version v+1 (made by closing v) is
// evaluated when v+1 is a multiple of EvalEvery, and the last one always.
func (m Async) EvaluateAfter(v int) bool {
	next := v + 1
	return m.EvalEvery <= 1 || next%m.EvalEvery == 0 || next >= m.Versions
}
