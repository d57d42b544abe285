package scheduler

import (
	"fmt"
	"math"
	"slices"

	"github.com/texgrid/texgrid/project-server/internal/aggregate"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Robust aggregation defaults (protocol.CampaignSpec Aggregator and its parameters).
const (
	DefaultTrimBeta   = aggregate.DefaultBeta
	DefaultClipFactor = aggregate.DefaultClip
	DefaultKrumF      = aggregate.DefaultKrumF
)

// MaxKrumResults bounds the results per version of a multi_krum campaign: the rule
// keeps k x k float64 distances (8 MB at 1000) and compares every pair.
const MaxKrumResults = 1000

// foldSize is the fewest results a campaign's version is built from while its rounds
// reach their quorum: Needed(quorum, work units) in sync mode, the buffer size in
// async mode.
func foldSize(c *protocol.CampaignSpec) int {
	if c.Mode == protocol.ModeAsync {
		return c.BufferSize
	}
	return Needed(c.Quorum, c.WorkUnitsPerRound)
}

// aggregatorDefaults fills and checks a campaign's aggregator and its parameters,
// after the mode's own defaults. A parameter of another rule than the campaign's is
// refused, so a spec never carries a setting that does nothing.
func aggregatorDefaults(c *protocol.CampaignSpec) error {
	bad := func(format string, args ...any) error { return fail(protocol.CodeBadRequest, format, args...) }
	if c.Aggregator == "" {
		c.Aggregator = protocol.AggregatorMean
	}
	owner := map[string]bool{
		"trim_beta":   c.TrimBeta != 0,
		"clip_factor": c.ClipFactor != 0,
		"krum_f":      c.KrumF != 0,
		"krum_m":      c.KrumM != 0,
	}
	mine := map[string][]string{
		protocol.AggregatorMean:        nil,
		protocol.AggregatorMedian:      nil,
		protocol.AggregatorTrimmedMean: {"trim_beta"},
		protocol.AggregatorNormClip:    {"clip_factor"},
		protocol.AggregatorMultiKrum:   {"krum_f", "krum_m"},
	}
	own, ok := mine[c.Aggregator]
	if !ok {
		return bad("aggregator %q: want %q, %q, %q, %q or %q", c.Aggregator, protocol.AggregatorMean,
			protocol.AggregatorTrimmedMean, protocol.AggregatorMedian, protocol.AggregatorNormClip, protocol.AggregatorMultiKrum)
	}
	for _, field := range []string{"trim_beta", "clip_factor", "krum_f", "krum_m"} {
		if owner[field] && !slices.Contains(own, field) {
			return bad("%s belongs to another aggregator than %q", field, c.Aggregator)
		}
	}
	k := foldSize(c)
	switch c.Aggregator {
	case protocol.AggregatorTrimmedMean:
		if c.TrimBeta == 0 {
			c.TrimBeta = DefaultTrimBeta
		}
		switch {
		case !(c.TrimBeta > 0 && c.TrimBeta < 0.5):
			return bad("trim_beta %g must be in (0, 0.5): the fraction of values trimmed from each end", c.TrimBeta)
		case math.Floor(c.TrimBeta*float64(k)) < 1:
			return bad("trim_beta %g trims nothing from the %d results a version may be built from: use at least %g or more results",
				c.TrimBeta, k, 1/float64(k))
		}
	case protocol.AggregatorNormClip:
		if c.ClipFactor == 0 {
			c.ClipFactor = DefaultClipFactor
		}
		if !(c.ClipFactor > 0 && c.ClipFactor <= 1000) {
			return bad("clip_factor %g must be in (0, 1000]: deltas are clipped to clip_factor x the median norm", c.ClipFactor)
		}
	case protocol.AggregatorMultiKrum:
		if c.KrumF == 0 {
			c.KrumF = DefaultKrumF
		}
		switch {
		case c.KrumF < 0:
			return bad("krum_f %d must be at least 1 (0 takes the default %d)", c.KrumF, DefaultKrumF)
		case k > MaxKrumResults:
			return bad("multi_krum compares every pair of results and takes at most %d per version; this campaign's versions take %d: use trimmed_mean or median",
				MaxKrumResults, k)
		case k <= 2*c.KrumF+2:
			return bad("krum_f %d needs more than %d results per version, and a version may be built from %d: raise %s or lower krum_f",
				c.KrumF, 2*c.KrumF+2, k, foldField(c))
		case c.KrumM < 0 || c.KrumM > k-c.KrumF:
			return bad("krum_m %d is outside 0..%d (results per version %d - krum_f %d); 0 means results - krum_f",
				c.KrumM, k-c.KrumF, k, c.KrumF)
		}
	}
	return nil
}

// foldField names the spec field that sets foldSize.
func foldField(c *protocol.CampaignSpec) string {
	if c.Mode == protocol.ModeAsync {
		return "buffer_size"
	}
	return "work_units_per_round or quorum"
}

// aggregatorOf returns a campaign's aggregator. Campaigns created before version 6
// have no Aggregator: they get the mean, by samples when WeightBySamples is set, as
// before.
func aggregatorOf(c *protocol.CampaignSpec) (aggregate.Aggregator, error) {
	a, err := aggregate.New(c.Aggregator, aggregate.Params{
		Beta: c.TrimBeta, C: c.ClipFactor, F: c.KrumF, M: c.KrumM, BySamples: c.WeightBySamples,
	})
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	return a, nil
}
