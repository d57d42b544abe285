package scheduler

import "github.com/texgrid/texgrid/project-server/internal/store"

// issuedSamples is the samples a result of w counts for: the fragments the server
// issued times the campaign's epochs, whatever the client's Texgrid-Samples header
// claimed. The header is still checked for form (a non-negative integer), so clients
// of every version keep working; a claim that differs from the unit is logged and
// otherwise ignored, so it can neither weight a delta (weight_by_samples) nor inflate
// a round's samples_trained.
func (s *Scheduler) issuedSamples(w *store.WorkUnit, ci *campaignInfo, claimed int64) int64 {
	issued := int64(w.FragmentCount) * int64(ci.spec.Hyper.Epochs)
	if claimed != issued {
		s.log.Warn("result claims other samples than its work unit; counting the unit's",
			"wu", w.ID, "host", w.HostID, "claimed", claimed, "issued", issued)
	}
	return issued
}
