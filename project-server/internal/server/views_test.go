package server_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/onnx"
)

// pngBytes draws a w x h grey texture.
func pngBytes(t *testing.T, w, h int) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetGray(x, y, color.Gray{Y: uint8((x*7 + y*13) % 256)})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestResearcherViews: the read routes of protocol 5 answer from the real server
// (hosts, work units with heartbeat progress, models, model downloads as safetensors
// and ONNX, classification), refuse bad input with 400 naming it, and refuse another
// researcher's campaign with 403. A version-1 client still reads its campaigns.
func TestResearcherViews(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		ctx := context.Background()
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 2, Start: true})
		a := e.host(1)
		wu := e.work(a)
		e.must(e.do("POST", protocol.WorkPath(wu.ID, "heartbeat"), a, protocol.HeartbeatRequest{Progress: 0.25, Epoch: 1}, nil), http.StatusOK, nil)
		api := e.api()

		hosts, err := api.Hosts(ctx)
		if err != nil || len(hosts) != 1 || hosts[0].Working != 1 || hosts[0].Cores != 2 {
			t.Fatalf("hosts: %+v, %v", hosts, err)
		}
		wus, err := api.WorkUnits(ctx, c.ID, 0)
		if err != nil || len(wus) != 1 || wus[0].ID != wu.ID || wus[0].State != "issued" || wus[0].Progress != 0.25 || wus[0].FragmentCount != wu.FragmentCount {
			t.Fatalf("work units of round 0: %+v, %v", wus, err)
		}
		if wus, err := api.WorkUnits(ctx, c.ID, 1); err != nil || len(wus) != 0 {
			t.Fatalf("work units of round 1: %+v, %v", wus, err)
		}
		models, err := api.Models(ctx)
		if err != nil || len(models) == 0 || models[0].Layers == 0 {
			t.Fatalf("models: %+v, %v", models, err)
		}
		ds, err := api.Datasets(ctx)
		if err != nil || len(ds) != 1 || ds[0].Name != testDataset || ds[0].Images != 18 || len(ds[0].Classes) != 3 || ds[0].Classes[0].Images != 6 || ds[0].Error != "" {
			t.Fatalf("datasets: %+v, %v", ds, err)
		}
		var st, blob bytes.Buffer
		if _, err := api.Model(ctx, c.ID, -1, protocol.FormatSafetensors, &st); err != nil {
			t.Fatal(err)
		}
		if _, err := api.Blob(ctx, c.ModelSHA256, &blob); err != nil || !bytes.Equal(st.Bytes(), blob.Bytes()) {
			t.Fatalf("safetensors download (%d bytes) differs from the blob (%d bytes, %v)", st.Len(), blob.Len(), err)
		}
		var ob bytes.Buffer
		if _, err := api.Model(ctx, c.ID, -1, protocol.FormatONNX, &ob); err != nil {
			t.Fatal(err)
		}
		m, err := onnx.Decode(ob.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if cl, err := m.Classes(); err != nil || strings.Join(cl, ",") != strings.Join(c.Classes, ",") {
			t.Fatalf("ONNX classes %v (%v), want %v", cl, err, c.Classes)
		}
		res, err := api.Classify(ctx, c.ID, "tex.png", pngBytes(t, 48, 40))
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, p := range res.Probabilities {
			sum += p
		}
		if math.Abs(sum-1) > 1e-5 || res.Fragments == 0 || res.ModelSHA256 != c.ModelSHA256 || len(res.Classes) != 3 {
			t.Fatalf("classify: %+v (sum %v)", res, sum)
		}

		_, otherTok, err := e.srv.Sched.AddResearcher(ctx, "grace")
		if err != nil {
			t.Fatal(err)
		}
		other := client.New(e.ts.URL, otherTok, nil)
		var sink bytes.Buffer
		refusals := []struct {
			name   string
			call   func() error
			status int
			want   string
		}{
			{"unknown format", func() error { _, err := api.Model(ctx, c.ID, -1, "pt", &sink); return err }, 400, "format \"pt\""},
			{"round without a model", func() error { _, err := api.Model(ctx, c.ID, 1, protocol.FormatONNX, &sink); return err }, 404, "round 1"},
			{"not an image", func() error { _, err := api.Classify(ctx, c.ID, "x.png", []byte("hello")); return err }, 400, "not a PNG or JPEG"},
			{"image under a fragment", func() error { _, err := api.Classify(ctx, c.ID, "x.png", pngBytes(t, 8, 8)); return err }, 400, "8x8"},
			{"unknown campaign", func() error { _, err := api.WorkUnits(ctx, 999, 0); return err }, 404, "999"},
			{"other's work units", func() error { _, err := other.WorkUnits(ctx, c.ID, 0); return err }, 403, "another researcher"},
			{"other's model", func() error { _, err := other.Model(ctx, c.ID, -1, protocol.FormatONNX, &sink); return err }, 403, "another researcher"},
			{"other classifies", func() error { _, err := other.Classify(ctx, c.ID, "x.png", pngBytes(t, 48, 40)); return err }, 403, "another researcher"},
		}
		for _, r := range refusals {
			err := r.call()
			if client.StatusOf(err) != r.status || !strings.Contains(err.Error(), r.want) {
				t.Errorf("%s: %v, want HTTP %d saying %q", r.name, err, r.status, r.want)
			}
		}
		// A version-1 researcher client is still served.
		rep := e.do("GET", protocol.CampaignPath(c.ID, ""), e.researcher, nil, map[string]string{protocol.HeaderVersion: "1"})
		e.must(rep, http.StatusOK, nil)
	})
}
