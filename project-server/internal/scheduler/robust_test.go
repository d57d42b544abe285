package scheduler

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/aggregate"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestAggregatorDefaults: each aggregator's parameters get their defaults, values a
// rule cannot use are a 400 naming the field and what is allowed, and a rule that
// cannot work with the results a version is built from is refused at creation.
func TestAggregatorDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		json    string // fields added to a campaign spec
		want    aggregate.Aggregator
		wantErr string // substring of the 400 message; empty for success
	}{
		{"absent is the mean", `{}`, aggregate.Mean{}, ""},
		{"mean by samples", `{"weight_by_samples":true}`, aggregate.Mean{BySamples: true}, ""},
		{"median", `{"aggregator":"median"}`, aggregate.Median{}, ""},
		{"trimmed default beta", `{"aggregator":"trimmed_mean","work_units_per_round":5,"quorum":0.9}`, aggregate.TrimmedMean{Beta: 0.2}, ""},
		{"trimmed beta", `{"aggregator":"trimmed_mean","trim_beta":0.3}`, aggregate.TrimmedMean{Beta: 0.3}, ""},
		{"trimmed async", `{"aggregator":"trimmed_mean","mode":"async","buffer_size":5}`, aggregate.TrimmedMean{Beta: 0.2}, ""},
		{"norm clip default", `{"aggregator":"norm_clip"}`, aggregate.NormClip{C: 2}, ""},
		{"norm clip by samples", `{"aggregator":"norm_clip","clip_factor":1.5,"weight_by_samples":true}`, aggregate.NormClip{C: 1.5, BySamples: true}, ""},
		{"krum", `{"aggregator":"multi_krum","work_units_per_round":5,"quorum":0.9}`, aggregate.MultiKrum{F: 1}, ""},
		{"krum async", `{"aggregator":"multi_krum","mode":"async","buffer_size":7,"krum_f":2,"krum_m":3}`, aggregate.MultiKrum{F: 2, M: 3}, ""},

		{"unknown", `{"aggregator":"krum"}`, nil, `aggregator "krum": want "mean", "trimmed_mean", "median", "norm_clip" or "multi_krum"`},
		{"sample_weight is not a campaign aggregator", `{"aggregator":"sample_weight"}`, nil, `aggregator "sample_weight"`},
		{"beta 0.5", `{"aggregator":"trimmed_mean","trim_beta":0.5}`, nil, "trim_beta 0.5 must be in (0, 0.5)"},
		{"beta negative", `{"aggregator":"trimmed_mean","trim_beta":-0.1}`, nil, "trim_beta -0.1 must be in (0, 0.5)"},
		// 4 units at quorum 0.8 close with 4 results: 0.2 x 4 trims nothing
		{"beta trims nothing", `{"aggregator":"trimmed_mean"}`, nil, "trim_beta 0.2 trims nothing from the 4 results"},
		{"clip 0 is the default, negative is not", `{"aggregator":"norm_clip","clip_factor":-1}`, nil, "clip_factor -1 must be in (0, 1000]"},
		{"krum too few in sync", `{"aggregator":"multi_krum"}`, nil, "krum_f 1 needs more than 4 results per version, and a version may be built from 4: raise work_units_per_round or quorum"},
		{"krum too few in async", `{"aggregator":"multi_krum","mode":"async","buffer_size":6,"krum_f":2}`, nil, "krum_f 2 needs more than 6 results per version, and a version may be built from 6: raise buffer_size"},
		{"krum too many", `{"aggregator":"multi_krum","mode":"async","buffer_size":1001}`, nil, "takes at most 1000 per version; this campaign's versions take 1001"},
		{"krum negative f", `{"aggregator":"multi_krum","work_units_per_round":5,"quorum":0.9,"krum_f":-1}`, nil, "krum_f -1 must be at least 1"},
		{"krum m over", `{"aggregator":"multi_krum","work_units_per_round":5,"quorum":0.9,"krum_m":5}`, nil, "krum_m 5 is outside 0..4"},
		{"parameter of another rule", `{"aggregator":"median","clip_factor":2}`, nil, `clip_factor belongs to another aggregator than "median"`},
		{"parameter without a rule", `{"krum_f":1}`, nil, `krum_f belongs to another aggregator than "mean"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var cs protocol.CampaignSpec
			js := `{"name":"n","dataset":"d","model":"tiny",` + strings.TrimPrefix(c.json, "{")
			if c.json == `{}` {
				js = `{"name":"n","dataset":"d","model":"tiny"}`
			}
			if err := json.Unmarshal([]byte(js), &cs); err != nil {
				t.Fatal(err)
			}
			err := Defaults(&cs)
			if c.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != protocol.CodeBadRequest || !strings.Contains(e.Message, c.wantErr) {
					t.Fatalf("Defaults(%s) = %v, want a bad_request containing %q", js, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Defaults(%s): %v", js, err)
			}
			got, err := aggregatorOf(&cs)
			if err != nil || got != c.want {
				t.Fatalf("aggregator of %s = %#v, %v; want %#v", js, got, err, c.want)
			}
		})
	}
}
