package agent_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/localserver"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// TestMetricsOnLocalAPI runs an agent through an accepted unit whose first upload
// meets a 502 and a unit answered late, then scrapes GET /metrics on the local API.
func TestMetricsOnLocalAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &stepTrainer{steps: 3}, localapi.PrefsPatch{})
	ok := h.workUnit(1)
	late := h.workUnit(2)
	h.srv.Fail(http.MethodPut, protocol.WorkPath(ok.ID, "result"), 502, 1)
	h.srv.SetLate(late.ID)
	a := h.run(2, nil)
	ts := httptest.NewServer(localserver.Handler("tok", a, h.pr))
	t.Cleanup(ts.Close)

	get := func(token string) *http.Response {
		req, _ := http.NewRequest("GET", ts.URL+localserver.PathMetrics, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"wrong token", "nope"}} {
		if resp := get(tc.token); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: GET /metrics answered %s, want 401", tc.name, resp.Status)
		}
	}
	resp := get("tok")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics with the token: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	val := func(name, label, lv string) float64 {
		f := fams[name]
		if f == nil {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range f.Metric {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, lp := range m.Label {
				if lp.GetName() == label && lp.GetValue() == lv {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	var delta int
	for _, id := range []int64{ok.ID, late.ID} {
		for _, u := range h.srv.UploadsOf(id) {
			delta = len(u.Body)
		}
	}
	cases := []struct {
		name       string
		metric     string
		label, val string
		want       float64
	}{
		{"accepted unit", "texgrid_client_work_units_total", "outcome", "accepted", 1},
		{"late unit", "texgrid_client_work_units_total", "outcome", "late", 1},
		{"nothing dropped", "texgrid_client_work_units_total", "outcome", "dropped", 0},
		{"samples of both answered units", "texgrid_client_samples_trained_total", "", "", 2 * 3 * 4},
		{"three upload attempts", "texgrid_client_upload_bytes_total", "", "", float64(3 * delta)},
		{"the 502 retried", "texgrid_client_errors_total", "kind", "retried", 1},
		{"nothing given up", "texgrid_client_errors_total", "kind", "failed", 0},
	}
	for _, tc := range cases {
		if got := val(tc.metric, tc.label, tc.val); got != tc.want {
			t.Errorf("%s: %s{%s=%q} = %v, want %v", tc.name, tc.metric, tc.label, tc.val, got, tc.want)
		}
	}
	if got := val("texgrid_client_training_seconds_total", "", ""); got <= 0 || got != a.Status().BusySeconds {
		t.Errorf("texgrid_client_training_seconds_total = %v, want the status's busy seconds %v (> 0)", got, a.Status().BusySeconds)
	}
	names, err := configs.DashboardMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "texgrid_client_") && fams[n] == nil {
			t.Errorf("the Grafana dashboard queries %s, which the client does not export", n)
		}
	}
	if delta == 0 {
		t.Fatal("the fake server recorded no upload body")
	}
}
