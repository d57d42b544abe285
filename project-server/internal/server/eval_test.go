package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/shareddata"
)

// kylbergRoot builds a dataset-ftp style root for two Kylberg classes: symlinks to the
// shared images plus a manifest, so nothing is copied.
func kylbergRoot(t *testing.T, classes ...string) string {
	src := shareddata.Path(t, "kylberg6")
	root := t.TempDir()
	ds := filepath.Join(root, "kylberg")
	if err := os.MkdirAll(ds, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &manifest.Manifest{Dataset: "kylberg", TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range classes {
		if err := os.Symlink(filepath.Join(src, cls), filepath.Join(ds, cls)); err != nil {
			t.Fatal(err)
		}
		names, err := filepath.Glob(filepath.Join(src, cls, "*.png"))
		if err != nil || len(names) == 0 {
			t.Fatalf("no images in %s: %v", cls, err)
		}
		sort.Strings(names)
		for _, p := range names[:20] {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			w, h, _, err := data.DecodeConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			m.Images = append(m.Images, manifest.NewImage(cls, filepath.Base(p), b, w, h, 0.2))
		}
	}
	m.Finish()
	if err := os.WriteFile(filepath.Join(ds, manifest.FileName), m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestEvaluation: after a round closes, the new model is evaluated on the real test
// images and the metrics are served with the round; a round closed while the server
// was down (no metrics yet) is evaluated after the restart.
func TestEvaluation(t *testing.T) {
	root := kylbergRoot(t, "canvas1", "stone1")
	dataDir := t.TempDir()
	open := func(engine eval.Engine) (*server.Server, *httptest.Server, context.CancelFunc) {
		srv, err := server.Open(context.Background(), server.Config{DataDir: dataDir, ModelsDir: "testdata/models",
			Datasets: datasets.Dir{Root: root}, Engine: engine, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); srv.Background(ctx) }()
		ts := httptest.NewServer(srv.Handler())
		return srv, ts, func() { cancel(); <-done; ts.Close(); srv.Close() }
	}
	// First life: no engine, so the closed round stays unevaluated.
	srv, ts, stop := open(nil)
	e := &env{t: t, srv: srv, ts: ts}
	ctx := context.Background()
	var err error
	if _, e.researcher, err = srv.Sched.AddResearcher(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if _, e.accountKey, err = srv.Sched.AddAccount(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	var c protocol.Campaign
	e.must(e.do("POST", protocol.APIPrefix+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "k", Dataset: "kylberg",
		Model: "tiny", FragmentSize: 64, FragmentsMin: 10, FragmentsMax: 10, Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 2,
		Start: true}, nil), http.StatusCreated, &c)
	tok := e.host(1)
	w := e.work(tok)
	e.must(e.upload(tok, w.ID, encode(t, delta(params(t, w), 1, 0.05), weights.F32), nil), http.StatusOK, nil)
	stop()

	// Second life: the evaluator finds round 0 without metrics.
	srv, ts, stop = open(eval.Go{Stride: 64})
	defer stop()
	e.srv, e.ts = srv, ts
	var rs []protocol.RoundInfo
	poll.Until(t, 60*time.Second, "round 0 to be evaluated after the restart", func() bool {
		rs = e.rounds(c.ID)
		return rs[0].Metrics != nil
	})
	m := rs[0].Metrics
	man, err := (datasets.Dir{Root: root}).Manifest(ctx, "kylberg", "")
	if err != nil {
		t.Fatal(err)
	}
	test := man.Refs(data.Test)
	wantFrags := 0
	perClass := make([]int, 2)
	for _, im := range test {
		n := len(data.GridFragments(0, im.Width, im.Height, 64, 64))
		wantFrags += n
		perClass[im.Class] += n
	}
	if m.Images != len(test) || m.Fragments != wantFrags || m.Engine != "go" {
		t.Fatalf("metrics cover %d images, %d fragments (engine %s); the test split has %d images, %d grid fragments",
			m.Images, m.Fragments, m.Engine, len(test), wantFrags)
	}
	if len(m.Confusion) != 2 || len(m.Precision) != 2 || len(m.F1) != 2 {
		t.Fatalf("per-class metrics have the wrong size: %+v", m)
	}
	correct := 0
	for k, row := range m.Confusion {
		if row[0]+row[1] != perClass[k] {
			t.Fatalf("confusion row %d sums to %d, the class has %d test fragments", k, row[0]+row[1], perClass[k])
		}
		correct += row[k]
	}
	if got := float64(correct) / float64(wantFrags); got != m.FragmentAccuracy {
		t.Fatalf("fragment accuracy %v, the confusion matrix says %v", m.FragmentAccuracy, got)
	}
	if m.ImageAccuracy < 0 || m.ImageAccuracy > 1 || m.Loss <= 0 {
		t.Fatalf("image accuracy %v, loss %v", m.ImageAccuracy, m.Loss)
	}
}
