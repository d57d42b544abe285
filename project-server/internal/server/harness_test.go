package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/pgtest"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// backends runs fn once on SQLite and once on PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, dsn func(t *testing.T, dataDir string) string)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, func(t *testing.T, dataDir string) string { return filepath.Join(dataDir, "texgrid.db") })
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.DSN(t)
		fn(t, func(*testing.T, string) string { return dsn })
	})
}

// clock is a controllable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is one running server with a researcher and a volunteer account.
type env struct {
	t          *testing.T
	dataDir    string
	dsn        string
	datasetDir string
	clock      *clock
	srv        *server.Server
	ts         *httptest.Server
	researcher string
	accountKey string
	retryAfter time.Duration // what hosts without work are told; default 1s
}

const testDataset = "tex"

// writeDataset writes a manifest for 3 classes x 6 images of 64x64 pixels; the server
// never reads pixels while scheduling, so only the manifest is needed.
func writeDataset(t *testing.T, root string) {
	m := &manifest.Manifest{Dataset: testDataset, TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"bark", "brick", "sand"} {
		for i := 0; i < 6; i++ {
			name := fmt.Sprintf("%s-%d.png", cls, i)
			sum := sha256.Sum256([]byte(cls + name))
			m.Images = append(m.Images, manifest.Image{Path: cls + "/" + name, Class: cls, Size: 100,
				SHA256: hex.EncodeToString(sum[:]), Width: 64, Height: 64, Split: data.SplitOf(cls, name, 0.2)})
		}
	}
	m.Finish()
	dir := filepath.Join(root, testDataset)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.FileName), m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newEnv(t *testing.T, dsn func(t *testing.T, dataDir string) string) *env {
	t.Helper()
	e := &env{t: t, dataDir: t.TempDir(), datasetDir: t.TempDir(),
		clock: &clock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}}
	e.dsn = dsn(t, e.dataDir)
	writeDataset(t, e.datasetDir)
	e.open()
	ctx := context.Background()
	var err error
	if _, e.researcher, err = e.srv.Sched.AddResearcher(ctx, "ada"); err != nil {
		t.Fatal(err)
	}
	if _, e.accountKey, err = e.srv.Sched.AddAccount(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	return e
}

// open starts (or restarts) the server on the env's data directory and database.
func (e *env) open() {
	e.t.Helper()
	srv, err := server.Open(context.Background(), server.Config{DataDir: e.dataDir, DB: e.dsn, ModelsDir: "testdata/models",
		Datasets: datasets.Dir{Root: e.datasetDir}, Now: e.clock.Now, RetryAfter: server.Duration(max(time.Second, e.retryAfter)),
		Log: slog.New(slog.NewTextHandler(logOut(), nil))})
	if err != nil {
		e.t.Fatalf("open server: %v", err)
	}
	e.srv = srv
	e.ts = httptest.NewServer(srv.Handler())
	e.t.Cleanup(e.close)
}

func (e *env) close() {
	if e.srv == nil {
		return
	}
	e.ts.Close()
	e.srv.Close()
	e.srv = nil
}

// restart closes and reopens the server on the same data directory and database.
func (e *env) restart() {
	e.close()
	e.open()
}

type reply struct {
	status int
	body   []byte
}

func (r reply) code() string {
	var eb protocol.ErrorBody
	if json.Unmarshal(r.body, &eb) == nil && eb.Error != nil {
		return eb.Error.Code
	}
	return ""
}

func (e *env) do(method, path, token string, body any, hdr map[string]string) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: b}
}

func (e *env) must(r reply, status int, out any) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("HTTP %d, want %d: %s", r.status, status, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			e.t.Fatalf("decode %s: %v", r.body, err)
		}
	}
}

func (e *env) createCampaign(cs protocol.CampaignSpec) protocol.Campaign {
	e.t.Helper()
	if cs.Name == "" {
		cs.Name = "test"
	}
	c, err := e.api().CreateCampaign(context.Background(), withTestDefaults(cs))
	if err != nil {
		e.t.Fatalf("create campaign: %v", err)
	}
	return c
}

// api is the researcher API client acting as the env's researcher.
func (e *env) api() *client.Client { return client.New(e.ts.URL, e.researcher, nil) }

func (e *env) rounds(id int64) []protocol.RoundInfo {
	e.t.Helper()
	rs, err := e.api().Rounds(context.Background(), id)
	if err != nil {
		e.t.Fatalf("rounds: %v", err)
	}
	return rs
}

func (e *env) campaign(id int64) protocol.Campaign {
	e.t.Helper()
	c, err := e.api().Campaign(context.Background(), id)
	if err != nil {
		e.t.Fatalf("campaign: %v", err)
	}
	return c
}

// host registers a host with the given speed and returns its token.
func (e *env) host(gflops float64) string {
	e.t.Helper()
	var r protocol.RegisterHostResponse
	e.must(e.do("POST", protocol.APIPrefix+"/hosts", "", protocol.RegisterHostRequest{AccountKey: e.accountKey,
		Name: "h", OS: "linux", Arch: "amd64", Cores: 2, GFLOPS: gflops}, nil), http.StatusCreated, &r)
	return r.Token
}

func (e *env) work(token string) *protocol.WorkUnit {
	e.t.Helper()
	var w protocol.WorkResponse
	e.must(e.do("POST", protocol.APIPrefix+"/work", token, protocol.WorkRequest{Threads: 2}, nil), http.StatusOK, &w)
	return w.WorkUnit
}

func (e *env) blob(token, sha string) []byte {
	e.t.Helper()
	r := e.do("GET", protocol.BlobPath(sha), token, nil, nil)
	e.must(r, http.StatusOK, nil)
	return r.body
}

// params resolves a work unit's model.
func params(t *testing.T, wu *protocol.WorkUnit) []spec.Param {
	sp, err := spec.Parse(wu.ModelSpec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(len(wu.Classes), wu.FragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	return r.Params
}

// delta makes a deterministic pseudo-random delta for the given params.
func delta(ps []spec.Param, seed uint64, scale float32) []tensor.Named {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]tensor.Named, len(ps))
	for i, p := range ps {
		tt := tensor.New(p.Shape...)
		for j := range tt.Data {
			tt.Data[j] = scale * float32(rng.NormFloat64())
		}
		out[i] = tensor.Named{Name: p.Name, T: tt}
	}
	return out
}

func encode(t *testing.T, ts []tensor.Named, dtype string) []byte {
	var b bytes.Buffer
	if err := weights.Encode(&b, ts, dtype, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func shaHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// upload PUTs a result body with correct headers unless hdr overrides them.
func (e *env) upload(token string, wuID int64, body []byte, hdr map[string]string) reply {
	e.t.Helper()
	h := map[string]string{protocol.HeaderSHA256: shaHex(body), protocol.HeaderSamples: "20", protocol.HeaderLoss: "0.5",
		"Content-Type": "application/octet-stream"}
	for k, v := range hdr {
		h[k] = v
	}
	return e.do("PUT", protocol.WorkPath(wuID, "result"), token, body, h)
}

func decodeModel(t *testing.T, b []byte) map[string]*tensor.Tensor {
	ts, _, err := weights.ReadAll(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*tensor.Tensor{}
	for _, n := range ts {
		m[n.Name] = n.T
	}
	return m
}

// expectMean computes W + mean(deltas) the way the server defines it: a float64 sum in
// acceptance order, divided by the count, added to float64(W), rounded to float32.
func expectMean(base map[string]*tensor.Tensor, deltas [][]tensor.Named) map[string][]float32 {
	out := map[string][]float32{}
	for name, w := range base {
		sum := make([]float64, len(w.Data))
		for _, d := range deltas {
			for i, v := range tensor.Find(d, name).Data {
				sum[i] += float64(v)
			}
		}
		res := make([]float32, len(w.Data))
		for i := range res {
			res[i] = float32(float64(w.Data[i]) + sum[i]/float64(len(deltas)))
		}
		out[name] = res
	}
	return out
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func checkModel(t *testing.T, got map[string]*tensor.Tensor, want map[string][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("model has %d tensors, want %d", len(got), len(want))
	}
	for name, w := range want {
		g := got[name]
		if g == nil || !sameBits(g.Data, w) {
			t.Fatalf("tensor %s differs from W + mean(deltas): got %v want %v", name, g, w)
		}
	}
}

// logOut is where test servers log: nowhere, unless TEXGRID_TEST_LOG=1.
func logOut() io.Writer {
	if os.Getenv("TEXGRID_TEST_LOG") == "1" {
		return os.Stderr
	}
	return io.Discard
}
