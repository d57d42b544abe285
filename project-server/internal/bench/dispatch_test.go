package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Volunteers is how many simulated volunteers the dispatch benchmark runs.
var Volunteers = 32

func writeManifest(b *testing.B, root string) {
	m := &manifest.Manifest{Dataset: "tex", TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"a", "b", "c"} {
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("%d.png", i)
			sum := sha256.Sum256([]byte(cls + name))
			m.Images = append(m.Images, manifest.Image{Path: cls + "/" + name, Class: cls, Size: 1,
				SHA256: hex.EncodeToString(sum[:]), Width: 32, Height: 32, Split: data.SplitOf(cls, name, 0.2)})
		}
	}
	m.Finish()
	os.MkdirAll(filepath.Join(root, "tex"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "tex", manifest.FileName), m.Encode(), 0o644); err != nil {
		b.Fatal(err)
	}
}

type volunteer struct {
	base, token string
	hc          *http.Client
}

func (v *volunteer) do(method, path string, body []byte, hdr map[string]string, out any) (int, error) {
	req, _ := http.NewRequest(method, v.base+path, bytes.NewReader(body))
	req.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
	req.Header.Set("Authorization", "Bearer "+v.token)
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if out != nil && resp.StatusCode < 300 {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// BenchmarkDispatch: one op is a work unit dispatched and its result uploaded, validated
// and recorded (accepted or late; quorum closes run inside), by Volunteers concurrent
// simulated volunteers over real HTTP against one server on SQLite. Reports pairs/s and
// the p50/p99 latency of single requests.
func BenchmarkDispatch(b *testing.B) {
	dir := b.TempDir()
	writeManifest(b, filepath.Join(dir, "ds"))
	srv, err := server.Open(context.Background(), server.Config{DataDir: dir, ModelsDir: "testdata/models",
		Datasets: datasets.Dir{Root: filepath.Join(dir, "ds")}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer func() { hs.Close(); srv.Close() }()
	ctx := context.Background()
	rid, _, _ := srv.Sched.AddResearcher(ctx, "r")
	_, key, _ := srv.Sched.AddAccount(ctx, "v")
	if _, err := srv.Sched.CreateCampaign(ctx, rid, protocol.CampaignSpec{Name: "bench", Dataset: "tex", Model: "tiny",
		FragmentSize: 16, FragmentsMin: 10, FragmentsMax: 20, Quorum: 0.8, WorkUnitsPerRound: 2 * Volunteers,
		Rounds: 100000, Start: true}); err != nil {
		b.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	tr := &http.Transport{MaxIdleConnsPerHost: Volunteers * 2}
	vols := make([]*volunteer, Volunteers)
	for i := range vols {
		v := &volunteer{base: base, hc: &http.Client{Transport: tr}}
		body, _ := json.Marshal(protocol.RegisterHostRequest{AccountKey: key, Name: fmt.Sprint(i), GFLOPS: float64(1 + i)})
		var reg protocol.RegisterHostResponse
		if code, err := v.do("POST", protocol.APIPrefix+"/hosts", body, nil, &reg); err != nil || code != 201 {
			b.Fatalf("register: %d %v", code, err)
		}
		v.token = reg.Token
		vols[i] = v
	}
	var lat []time.Duration
	var latMu sync.Mutex
	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	var outcomes [3]atomic.Int64
	var polls atomic.Int64 // work requests answered without a unit
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	for _, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var my []time.Duration
			for remaining.Add(-1) >= 0 {
				for {
					t0 := time.Now()
					var wr protocol.WorkResponse
					code, err := v.do("POST", protocol.APIPrefix+"/work", []byte(`{"threads":1}`), nil, &wr)
					my = append(my, time.Since(t0))
					if err != nil || code != 200 {
						b.Errorf("work: %d %v", code, err)
						return
					}
					if wr.WorkUnit == nil {
						polls.Add(1)
						time.Sleep(time.Millisecond) // a volunteer's poll interval: part of the load measured
						continue
					}
					body, sha := bodies.get(b, wr.WorkUnit)
					t0 = time.Now()
					code, err = v.do("PUT", protocol.WorkPath(wr.WorkUnit.ID, "result"), body,
						map[string]string{protocol.HeaderSHA256: sha, protocol.HeaderSamples: "10"}, nil)
					my = append(my, time.Since(t0))
					switch {
					case err != nil:
						b.Errorf("result: %v", err)
						return
					case code == 200:
						outcomes[0].Add(1)
					case code == 409:
						outcomes[1].Add(1)
					default:
						outcomes[2].Add(1)
					}
					break
				}
			}
			latMu.Lock()
			lat = append(lat, my...)
			latMu.Unlock()
		}()
	}
	wg.Wait()
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	if outcomes[2].Load() > 0 {
		b.Fatalf("%d results refused", outcomes[2].Load())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(b.N)/el.Seconds(), "pairs/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(outcomes[1].Load())/float64(b.N), "late-frac")
		b.ReportMetric(float64(polls.Load())/float64(b.N), "polls/op")
		if cpu > 0 {
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
		}
	}
}

// claim is the row the bare peer claims and completes.
type claim struct {
	ID    int64
	State string
	Host  int64
}

// BenchmarkBareGormPairs is the peer: the same SQLite settings with one table, one
// claim (UPDATE ... RETURNING) and one complete per op, no HTTP, blobs or validation.
func BenchmarkBareGormPairs(b *testing.B) {
	dir := b.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "bare.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Exec("CREATE TABLE claims (id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, host INTEGER NOT NULL DEFAULT 0)").Error; err != nil {
		b.Fatal(err)
	}
	var remaining atomic.Int64
	remaining.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for h := 0; h < Volunteers; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for remaining.Add(-1) >= 0 {
				c := claim{State: "issued", Host: int64(h)}
				if err := db.Create(&c).Error; err != nil {
					b.Error(err)
					return
				}
				if err := db.Model(&claim{}).Where("id = ?", c.ID).Update("state", "done").Error; err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
}

func init() {
	if v := os.Getenv("TEXGRID_BENCH_VOLUNTEERS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			Volunteers = n
		}
	}
}

// deltaBodies holds precomputed result bodies, one per unit of a round (picked by work
// unit id), so the simulated volunteers spend no time encoding and the benchmark
// measures the server.
type deltaBodies struct {
	once   sync.Once
	bodies [][]byte
	shas   []string
}

var bodies deltaBodies

func (d *deltaBodies) get(b *testing.B, wu *protocol.WorkUnit) ([]byte, string) {
	d.once.Do(func() {
		sp, err := spec.Parse(wu.ModelSpec)
		if err != nil {
			b.Error(err)
			return
		}
		r, err := sp.Resolve(len(wu.Classes), wu.FragmentSize)
		if err != nil {
			b.Error(err)
			return
		}
		// As many distinct bodies as a round has units: the server merges one copy of
		// a delta per round, so byte-identical bodies would keep rounds from closing.
		for k := 0; k < max(64, 2*Volunteers); k++ {
			ts := make([]tensor.Named, len(r.Params))
			for i, p := range r.Params {
				tt := tensor.New(p.Shape...)
				for j := range tt.Data {
					tt.Data[j] = 0.001 * float32((k*31+j)%17-8)
				}
				ts[i] = tensor.Named{Name: p.Name, T: tt}
			}
			ts[0].T.Data[0] = 1e-6 * float32(k+1) // the pattern above repeats every 17 bodies
			var buf bytes.Buffer
			weights.Encode(&buf, ts, weights.F32, nil)
			sum := sha256.Sum256(buf.Bytes())
			d.bodies = append(d.bodies, buf.Bytes())
			d.shas = append(d.shas, hex.EncodeToString(sum[:]))
		}
	})
	k := int(wu.ID % int64(len(d.bodies)))
	return d.bodies[k], d.shas[k]
}
