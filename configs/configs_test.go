package configs

import (
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/spec"
)

func TestShippedModelsParse(t *testing.T) {
	t.Parallel()
	names := ModelNames()
	if strings.Join(names, ",") != "tcnn-small,tcnn3" {
		t.Fatalf("ModelNames = %v", names)
	}
	for _, n := range names {
		b, err := Model(n)
		if err != nil {
			t.Fatal(err)
		}
		s, err := spec.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if s.Name != n {
			t.Errorf("spec %s has name %q", n, s.Name)
		}
	}
	if _, err := Model("alexnet"); err == nil || !strings.Contains(err.Error(), "tcnn-small, tcnn3") {
		t.Fatalf("unknown model error = %v", err)
	}
}

func TestDashboardMetrics(t *testing.T) {
	t.Parallel()
	got, err := DashboardMetrics()
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, m := range got {
		has[m] = true
	}
	cases := []struct {
		name   string
		metric string
		want   bool
	}{
		{"a histogram by its family name", "texgrid_rpc_duration_seconds", true},
		{"not its _bucket series", "texgrid_rpc_duration_seconds_bucket", false},
		{"a counter with its _total", "texgrid_campaign_work_total", true},
		{"a pool statistic", "go_sql_wait_count_total", true},
		{"a template variable's query", "texgrid_campaign_round", true},
		{"a client metric", "texgrid_client_samples_trained_total", true},
		{"an FTP metric", "texgrid_ftp_sent_bytes_total", true},
	}
	for _, tc := range cases {
		if has[tc.metric] != tc.want {
			t.Errorf("%s: %s listed = %v, want %v (all: %v)", tc.name, tc.metric, has[tc.metric], tc.want, got)
		}
	}
}
