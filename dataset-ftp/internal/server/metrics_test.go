package server_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jlaffaye/ftp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
	"github.com/texgrid/texgrid/dataset-ftp/internal/server"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/trainer/poll"
)

// scrapeFTP reads the server's GET /metrics; value reads one sample of it.
func scrapeFTP(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return fams
}

func value(fams map[string]*dto.MetricFamily, name, label, lv string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	for _, m := range f.Metric {
		match := label == ""
		for _, lp := range m.Label {
			if lp.GetName() == label && lp.GetValue() == lv {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	return 0
}

// TestMetrics uploads an image and a non-image, reads the image back, fails one login,
// and checks each counter on the real /metrics listener moved by exactly that.
func TestMetrics(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, func(c *server.Config) { c.MetricsListen = "127.0.0.1:0" })
	if env.MetricsURL == "" {
		t.Fatal("MetricsListen set but no metrics address")
	}
	before := scrapeFTP(t, env.MetricsURL)
	img := smallPNG(t, 20, 10)
	junk := []byte("not an image at all\n")

	up := dial(t, env, ftptest.Uploader, ftptest.Password)
	mkdirs(t, up, "/m", "/m/bark")
	for name, b := range map[string][]byte{"a.png": img, "notes.txt": junk} {
		if err := up.Stor("/m/bark/"+name, bytes.NewReader(b)); err != nil {
			t.Fatalf("STOR %s: %v", name, err)
		}
	}
	env.WaitIndexed(t, "m", func(m *manifest.Manifest) bool { return len(m.Images) == 1 && len(m.Quarantined) == 1 })
	rd := dial(t, env, ftptest.Reader, ftptest.Password)
	if got := retr(t, rd, "/m/bark/a.png"); !bytes.Equal(got, img) {
		t.Fatal("RETR returned other bytes than were stored")
	}
	bad, err := ftp.Dial(env.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Login(ftptest.Reader, "wrong password"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	bad.Quit()
	after := scrapeFTP(t, env.MetricsURL)

	cases := []struct {
		name   string
		metric string
		label  string
		lv     string
		want   float64
	}{
		{"bytes received: both uploads", "texgrid_ftp_received_bytes_total", "", "", float64(len(img) + len(junk))},
		{"bytes sent: the one RETR", "texgrid_ftp_sent_bytes_total", "", "", float64(len(img))},
		{"sessions: uploader, reader, refused", "texgrid_ftp_sessions_total", "", "", 3},
		{"logins ok", "texgrid_ftp_logins_total", "result", "ok", 2},
		{"logins failed", "texgrid_ftp_logins_total", "result", "failed", 1},
		{"images indexed", "texgrid_ftp_dataset_images", "dataset", "m", 1},
		{"files quarantined", "texgrid_ftp_dataset_quarantined", "dataset", "m", 1},
	}
	for _, tc := range cases {
		got := value(after, tc.metric, tc.label, tc.lv) - value(before, tc.metric, tc.label, tc.lv)
		if got != tc.want {
			t.Errorf("%s: %s moved by %v, want %v", tc.name, tc.metric, got, tc.want)
		}
	}
	names, err := configs.DashboardMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "texgrid_ftp_") && after[n] == nil {
			t.Errorf("the Grafana dashboard queries %s, which dataset-ftp does not export", n)
		}
	}
	if got := value(after, "texgrid_ftp_index_runs_total", "result", "ok"); got < 1 {
		t.Errorf("texgrid_ftp_index_runs_total{result=\"ok\"} = %v after an indexing", got)
	}
	// Sessions still open: the uploader's and the reader's; the refused one closes.
	base := value(before, "texgrid_ftp_sessions_active", "", "")
	poll.Until(t, 10*time.Second, "two sessions active", func() bool {
		return value(scrapeFTP(t, env.MetricsURL), "texgrid_ftp_sessions_active", "", "") == base+2
	})
	up.Quit()
	rd.Quit()
	poll.Until(t, 10*time.Second, "no session active after QUIT", func() bool {
		return value(scrapeFTP(t, env.MetricsURL), "texgrid_ftp_sessions_active", "", "") == base
	})
}
