package configs

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// GrafanaDashboard is the shipped Grafana dashboard (configs/grafana/texgrid.json),
// built on the metrics the project server, the volunteer client and dataset-ftp export.
//
//go:embed grafana/texgrid.json
var GrafanaDashboard []byte

// dashboardMetric matches a metric name in a PromQL query of the dashboard: every
// exported name starts with one of these prefixes, and no label name does.
var dashboardMetric = regexp.MustCompile(`\b(?:texgrid|go|process)_[a-z0-9_]*[a-z0-9]`)

// DashboardMetrics lists, sorted and without repeats, the metric families the shipped
// dashboard queries: a histogram's _bucket, _sum and _count series count as the
// histogram itself. It fails if the dashboard is not JSON.
func DashboardMetrics() ([]string, error) {
	var v any
	if err := json.Unmarshal(GrafanaDashboard, &v); err != nil {
		return nil, fmt.Errorf("grafana/texgrid.json: %w", err)
	}
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case string:
			for _, m := range dashboardMetric.FindAllString(x, -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(m, suf); ok {
						m = base
						break
					}
				}
				seen[m] = true
			}
		}
	}
	walk(v)
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}
