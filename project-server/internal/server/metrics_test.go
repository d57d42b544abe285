package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/internal/api"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// scrape reads url as the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return fams
}

// sample finds the sample of name whose labels include labels (name=value pairs); ok
// is false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (*dto.Metric, bool) {
	f := fams[name]
	if f == nil {
		return nil, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is a counter's or gauge's value, 0 when absent.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	m, ok := sample(fams, name, labels...)
	if !ok {
		return 0
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func TestMetricsAfterTraffic(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 2, Rounds: 2, Start: true})
		camp := strconv.FormatInt(c.ID, 10)
		url := e.ts.URL + "/metrics"
		before := scrape(t, url)
		kind := func(fams map[string]*dto.MetricFamily, k string) float64 {
			return value(fams, "texgrid_campaign_work_total", "campaign", camp, "kind", k)
		}
		a, b := e.host(1), e.host(1)
		wa, wb := e.work(a), e.work(b)
		if wa == nil || wb == nil {
			t.Fatal("two hosts of a two-unit round got no work")
		}
		e.clock.Add(90 * time.Second)
		ps := params(t, wa)
		nan := delta(ps, 3, 0.01)
		nan[1].T.Data[0] = float32(math.NaN())
		e.must(e.upload(a, wa.ID, encode(t, nan, weights.F32), nil), http.StatusUnprocessableEntity, nil)
		e.must(e.upload(a, wa.ID, encode(t, delta(ps, 1, 0.01), weights.F32), nil), http.StatusOK, nil)
		e.must(e.upload(b, wb.ID, encode(t, delta(ps, 2, 0.01), weights.F32), nil), http.StatusOK, nil)
		if r := e.rounds(c.ID); len(r) < 1 || r[0].ClosedAt == nil {
			t.Fatalf("round 0 did not close: %+v", r)
		}
		after := scrape(t, url)

		cases := []struct {
			name string
			kind string
			want float64
		}{
			{"issued", "issued", 2},
			{"accepted", "accepted", 2},
			{"invalid", "invalid", 1},
			{"late", "late", 0},
			{"stale", "stale", 0},
			{"duplicate", "duplicate", 0},
		}
		for _, tc := range cases {
			if got := kind(after, tc.kind) - kind(before, tc.kind); got != tc.want {
				t.Errorf("%s: texgrid_campaign_work_total moved by %v, want %v", tc.name, got, tc.want)
			}
		}
		m, ok := sample(after, "texgrid_round_duration_seconds", "campaign", camp)
		if !ok {
			t.Fatal("no texgrid_round_duration_seconds for the campaign after a round closed")
		}
		h := m.GetHistogram()
		if h.GetSampleCount() != 1 || h.GetSampleSum() != 90 {
			t.Fatalf("round durations: count %d sum %v, want 1 round of 90 s (the test clock)", h.GetSampleCount(), h.GetSampleSum())
		}
		for _, bk := range h.Bucket {
			want := uint64(0)
			if bk.GetUpperBound() >= 90 {
				want = 1
			}
			if bk.GetCumulativeCount() != want {
				t.Errorf("round duration bucket le=%v holds %d, want %d", bk.GetUpperBound(), bk.GetCumulativeCount(), want)
			}
		}
		if got := value(after, "texgrid_campaign_round", "campaign", camp); got != 1 {
			t.Errorf("texgrid_campaign_round = %v, want 1 after round 0 closed", got)
		}
		// Per-endpoint latency: exactly two dispatches and three uploads observed.
		for _, tc := range []struct {
			route string
			code  string
			want  uint64
		}{
			{"/api/v1/work", "200", 2},
			{"/api/v1/work/:id/result", "200", 2},
			{"/api/v1/work/:id/result", "422", 1},
		} {
			count := func(f map[string]*dto.MetricFamily) uint64 {
				m, ok := sample(f, "texgrid_rpc_duration_seconds", "route", tc.route, "code", tc.code)
				if !ok {
					return 0
				}
				return m.GetHistogram().GetSampleCount()
			}
			if got := count(after) - count(before); got != tc.want {
				t.Errorf("texgrid_rpc_duration_seconds{route=%q,code=%q} count moved by %d, want %d", tc.route, tc.code, got, tc.want)
			}
		}
		// Every metric the shipped dashboard queries, but the client's and the FTP
		// store's, is exported here: the dashboard cannot drift from the names.
		names, err := configs.DashboardMetrics()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "texgrid_client_") || strings.HasPrefix(n, "texgrid_ftp_") {
				continue
			}
			if after[n] == nil {
				t.Errorf("the Grafana dashboard queries %s, which the server does not export", n)
			}
		}
		// The database pool is reported, and has served the requests above.
		if _, ok := sample(after, "go_sql_open_connections", "db_name", "write"); !ok {
			t.Error("no go_sql_open_connections{db_name=\"write\"}")
		}
		if got := value(after, "go_sql_max_open_connections", "db_name", "write"); got < 1 {
			t.Errorf("go_sql_max_open_connections{db_name=\"write\"} = %v, want at least 1", got)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for a logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Split(bytes.TrimSpace(s.b.Bytes()), []byte("\n"))
}

func TestRequestIDInLogs(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	srv, err := server.Open(t.Context(), server.Config{DataDir: t.TempDir(), ModelsDir: "testdata/models",
		Log: slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	h := srv.Handler()
	cases := []struct {
		name   string
		sent   string // X-Request-Id sent; "" sends none
		wantID string // "" means a made-up one
	}{
		{"id from the balancer kept", "lb-7f3a.42", "lb-7f3a.42"},
		{"no id: one is made", "", ""},
		{"malformed id replaced", "bad id\nwith newline", ""},
		{"overlong id replaced", string(bytes.Repeat([]byte("a"), 129)), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := len(out.lines())
			req, _ := http.NewRequest("GET", protocol.APIPrefix+"/status?case="+tc.name, nil)
			if tc.sent != "" {
				req.Header.Set(api.HeaderRequestID, tc.sent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(api.HeaderRequestID)
			switch {
			case tc.wantID != "" && got != tc.wantID:
				t.Fatalf("answered id %q, want %q", got, tc.wantID)
			case tc.wantID == "" && (got == "" || got == tc.sent):
				t.Fatalf("answered id %q: want a fresh one", got)
			}
			var ids []string
			for _, ln := range out.lines()[n:] {
				var rec map[string]any
				if err := json.Unmarshal(ln, &rec); err != nil {
					t.Fatalf("log line is not JSON: %q", ln)
				}
				if rec["msg"] != "request" && rec["msg"] != "response" {
					continue // the server's own lines, outside any request
				}
				id, _ := rec["request_id"].(string)
				ids = append(ids, id)
			}
			if len(ids) < 2 {
				t.Fatalf("one request logged %d lines, want at least 2 (request and response)", len(ids))
			}
			for _, id := range ids {
				if id != got {
					t.Fatalf("log lines of one request carry ids %q, want all %q", ids, got)
				}
			}
		})
	}
}
